"""``python -m caxton`` runs the command-line interface."""

from caxton.cli import main

if __name__ == "__main__":
    main()
