"""Durations ("30s", "24h") and sizes ("100MB", "10MiB") as they appear in config files.

Pure functions, shared by the server configuration and the agent specs. A bare number is taken
in the base unit: seconds for durations, bytes for sizes.
"""

from __future__ import annotations

import re

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}

_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "tib": 1024**4,
}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")

DURATION_HELP = 'a duration such as "500ms", "30s", "5m", "1h30m", "7d" or a number of seconds'
SIZE_HELP = 'a size such as "512KB", "100MB", "10MiB", "1GB" or a number of bytes'


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds.

    Raises:
        ValueError: with a message naming the accepted forms, when ``value`` is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    text = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position or match.group(2) not in _DURATION_UNITS:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    return total


def parse_size(value: object) -> int:
    """Return ``value`` in bytes. KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024.

    Raises:
        ValueError: with a message naming the accepted forms, when ``value`` is not a size.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value!r}")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    match = _SIZE.match(value.strip().lower())
    if match is None or match.group(2) not in ("", *_SIZE_UNITS):
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    multiplier = _SIZE_UNITS.get(match.group(2), 1)
    return int(float(match.group(1)) * multiplier)


def format_duration(seconds: float) -> str:
    """Render seconds the way a config file would write them ("30s", "24h", "1.5s")."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """Render bytes for people ("10MiB", "100KB", "512B")."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
