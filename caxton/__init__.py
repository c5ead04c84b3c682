"""Caxton: a self-hosted multi-agent application server on trio."""

__version__ = "0.1.0"

__all__ = ["__version__"]
