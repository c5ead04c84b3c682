"""Logging setup: ``logging.level``, ``logging.format`` (json | text) and ``logging.file``.

Called by the CLI (never at import). Every module logs through its own
``logging.getLogger("caxton.<component>")``; the HTTP layer writes one canonical line per request
with ``extra`` fields, which the JSON format turns into keys.
"""

from __future__ import annotations

import json
import logging
import re
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


def is_standard_field(key: str) -> bool:
    """Whether ``key`` is a field every ``LogRecord`` has (or a private one): not one that
    came through ``extra=`` or a record factory, which both formats print."""
    return key in _STANDARD or key[0] == "_"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and every ``extra`` field.

    It runs for every request (the canonical request line), so it keeps the per-line work
    small: one encoder for every line, the date part of ``ts`` formatted once per second.
    """

    def __init__(self) -> None:
        super().__init__()
        # (second, its date and time): one tuple, replaced whole, so a thread that logs at
        # the same time never pairs one second with another's text
        self._date: tuple[int, str] = (-1, "")

    def timestamp_of(self, created: float, msecs: float) -> str:
        """``ts`` of a line made at ``created`` (``time.time()``), ``msecs`` its millisecond."""
        second = int(created)
        date = self._date
        if date[0] != second:
            date = self._date = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{date[1]}.{int(msecs):03d}Z"

    def encode(self, payload: dict[str, object]) -> str:
        """One line of ``payload`` (what :meth:`format` returns for a record's fields)."""
        return _ENCODER.encode(payload)

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": self.timestamp_of(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key[0] != "_":
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(payload)


#: ``json.dumps(..., default=str)`` builds an encoder per call; one is enough.
JSON_ENCODER = json.JSONEncoder(default=str)
_ENCODER = JSON_ENCODER


#: Control characters (C0, DEL, C1) and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    """``text`` on one line: ``\\n``, ``\\r``, ``\\t`` and ``\\xNN``/``\\uNNNN`` for other
    control characters, so a value a client sent cannot forge a log line (issue #13)."""

    def one(match: re.Match[str]) -> str:
        char = match.group()
        if char in _ESCAPES:
            return _ESCAPES[char]
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return _CONTROL.sub(one, text)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...``, readable in a terminal.

    Every record is one line: control characters in the message and in ``extra`` values are
    escaped (:func:`escape_control`). A traceback follows on lines indented by four spaces,
    so no text a client sent can start a line that looks like a record of its own.
    """

    default_msec_format: ClassVar[str] = "%s.%03d"  # type: ignore[misc]

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        record.message = escape_control(message)
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        extras = [
            escape_control(f"{key}={value}")
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_") and str(value) not in message
        ]
        if extras:
            line = f"{line} {' '.join(extras)}"
        details = []
        if record.exc_info:
            details.append(self.formatException(record.exc_info))
        elif record.exc_text:
            details.append(record.exc_text)
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        for block in details:
            line += "".join(f"\n    {escape_control(part)}" for part in block.splitlines())
        return line


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
    _skip_unused_record_fields()
    set_level(config.level)
    # hypercorn's own error log goes through the same handlers.
    hypercorn = logging.getLogger("hypercorn.error")
    hypercorn.handlers = list(handlers)
    hypercorn.propagate = False
    hypercorn.setLevel(logging.WARNING)


def _skip_unused_record_fields() -> None:
    """Stop ``logging`` from filling record fields no Caxton format shows.

    The caller's file, line and function (a walk up the stack for every record), and the
    thread and process names: neither format prints them, and every request logs at least one
    line. These are the switches the logging HOWTO's "Optimization" section names; the line
    costs about 4 µs less (of 23).
    """
    logging._srcfile = None  # the HOWTO's switch for the caller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def set_level(level: str) -> None:
    """Change the level of every Caxton logger (used on SIGHUP)."""
    logging.getLogger("caxton").setLevel(LEVELS[level])
