"""Entry point of the PyInstaller bundle: the ``caxton`` command line, as the installed script."""

from caxton.cli import main

if __name__ == "__main__":
    main()
