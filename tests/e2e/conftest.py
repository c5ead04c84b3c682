"""End-to-end tests run real ``caxton`` processes; see ``processes.py``."""
