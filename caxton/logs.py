"""Logging setup: ``logging.level``, ``logging.format`` (json | text) and ``logging.file``.

Called by the CLI (never at import). Every module logs through its own
``logging.getLogger("caxton.<component>")``; the HTTP layer writes one canonical line per request
with ``extra`` fields, which the JSON format turns into keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.config.model import LoggingConfig

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...``, readable in a terminal."""

    default_msec_format: ClassVar[str] = "%s.%03d"  # type: ignore[misc]

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        message = record.getMessage()
        extras = [
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_") and str(value) not in message
        ]
        return f"{line} {' '.join(extras)}" if extras else line


def configure_logging(config: LoggingConfig, *, log_file: Path | None = None) -> None:
    """Install handlers on the ``caxton`` logger (stderr, plus ``log_file`` when given).

    Safe to call again (SIGHUP): handlers are replaced, not added.
    """
    formatter: logging.Formatter = JSONFormatter() if config.format == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    root = logging.getLogger("caxton")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.propagate = False
    set_level(config.level)
    # hypercorn's own error log goes through the same handlers.
    hypercorn = logging.getLogger("hypercorn.error")
    hypercorn.handlers = list(handlers)
    hypercorn.propagate = False
    hypercorn.setLevel(logging.WARNING)


def set_level(level: str) -> None:
    """Change the level of every Caxton logger (used on SIGHUP)."""
    logging.getLogger("caxton").setLevel(LEVELS[level])
