"""Render the configuration reference (README's table) from the fields' help metadata."""

from __future__ import annotations

import typing

import attrs

from caxton.config.loader import attrs_class, dotted
from caxton.config.model import Bytes, CaxtonConfig, Seconds
from caxton.units import format_duration, format_size


def reference_rows(cls: type = CaxtonConfig, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """``[key, default, description]`` for every key, sections included."""
    rows: list[list[str]] = []
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        path = (*prefix, field.name)
        nested = attrs_class(hints[field.name])
        help_text = field.metadata.get("help", "")
        if nested is not None:
            rows.append([f"`{dotted(path)}`", "section", help_text])
            rows.extend(reference_rows(nested, path))
            continue
        rows.append([f"`{dotted(path)}`", _default(field, hints[field.name]), help_text])
    return rows


def _default(field: attrs.Attribute[object], hint: object) -> str:
    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        value: object = field.default.factory()  # type: ignore[attr-defined]
    else:
        value = field.default
    if value is None:
        return "-"
    if hint is Seconds and isinstance(value, int | float):
        return f'`"{format_duration(float(value))}"`'
    if hint is Bytes and isinstance(value, int):
        return f'`"{format_size(value)}"`'
    return f"`{value!r}`".replace("'", '"')


def reference_markdown() -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in reference_rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown())
