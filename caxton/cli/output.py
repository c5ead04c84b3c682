"""Rendering CLI results: a human table by default, JSON with ``--output json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from collections.abc import Sequence

OUTPUT_OPTION_HELP = "table for people (default), json for programs."


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def output_option(func: F) -> F:
    """``-o/--output table|json`` for commands that print results."""
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help=OUTPUT_OPTION_HELP,
    )(func)


def byte_size(size: float) -> str:
    """``size`` bytes for people: ``1.5GB``, ``12.0MB``, ``3.4KB``, ``512B`` (powers of 1000)."""
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= factor:
            return f"{size / factor:.1f}{unit}"
    return f"{int(size)}B"


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def emit(output: str, data: T, text: str | Callable[[T], str], *, err: bool = False) -> None:
    """Print a command's result: ``data`` as JSON with ``-o json``, else ``text`` or the
    line(s) it makes of ``data`` (on stderr with ``err``)."""
    if output == "json":
        emit_json(data)
    else:
        click.echo(text if isinstance(text, str) else text(data), err=err)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table; empty cells print as ``-``."""
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def key_values(pairs: Sequence[tuple[str, object]]) -> str:
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in pairs)
