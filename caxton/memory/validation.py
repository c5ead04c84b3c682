"""Checks on memory input: sizes, text encoding, ranges. Pure functions.

Limits (each error names the field, the limit and the value's size):

* names (entities, relation ends): 1-256 characters;
* entity and relation types: 1-64 characters;
* an observation: non-empty and at most 32 KiB of UTF-8 (the model reads only the first 256
  tokens anyway; longer documents belong in several observations);
* observations per entity: at most 1000;
* metadata: a JSON object of at most 64 KiB once serialised;
* agent names: as agent specs (DESIGN §4), 1-64 characters, ``^[A-Za-z][A-Za-z0-9_-]*$``.

Text must be valid Unicode that encodes to UTF-8: bytes that are not UTF-8 and strings with
lone surrogates (``"\\ud800"`` from JSON) are refused, as is the NUL character.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

from caxton.errors import ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_NAME_CHARS = 256
MAX_TYPE_CHARS = 64
MAX_OBSERVATION_BYTES = 32 * 1024
MAX_OBSERVATIONS_PER_ENTITY = 1000
MAX_METADATA_BYTES = 64 * 1024
MAX_AGENT_CHARS = 64
AGENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def invalid(field: str, problem: str, **details: Any) -> ValidationFailed:
    """Build the error for one bad field."""
    return ValidationFailed(f"{field}: {problem}", details={"field": field, **details})


def text(value: object, field: str) -> str:
    """Return ``value`` as a str that is valid UTF-8, decoding bytes strictly.

    Raises:
        ValidationFailed: not a string, not UTF-8, a lone surrogate or a NUL character.
    """
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid(
                field,
                f"is not valid UTF-8 (byte {exc.start}: {exc.reason}); send UTF-8 text",
            ) from exc
    if not isinstance(value, str):
        raise invalid(field, f"must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(
            field, f"contains an invalid character at position {exc.start} (a lone surrogate)"
        ) from exc
    if "\x00" in value:
        raise invalid(field, "contains a NUL character")
    return value


def _bounded(value: object, field: str, limit: int) -> str:
    result = text(value, field)
    if not result.strip():
        raise invalid(field, "must not be empty")
    if len(result) > limit:
        raise invalid(field, f"is {len(result)} characters long; the limit is {limit}", limit=limit)
    return result


def check_name(value: object, field: str) -> str:
    """An entity name (also ``from``/``to`` of relations)."""
    return _bounded(value, field, MAX_NAME_CHARS)


def check_entity_type(value: object, field: str) -> str:
    """An entity or relation type."""
    return _bounded(value, field, MAX_TYPE_CHARS)


def check_agent(value: object, field: str) -> str:
    """An agent name."""
    result = _bounded(value, field, MAX_AGENT_CHARS)
    if not AGENT_NAME.match(result):
        raise invalid(
            field,
            f"{result!r} is not an agent name (a letter, then letters, digits, '_' or '-')",
        )
    return result


def check_observation(value: object, field: str) -> str:
    """One observation."""
    result = text(value, field)
    if not result.strip():
        raise invalid(field, "an observation must not be empty")
    size = len(result.encode("utf-8"))
    if size > MAX_OBSERVATION_BYTES:
        raise invalid(
            field,
            f"the observation is {size} bytes; the limit is {MAX_OBSERVATION_BYTES} bytes "
            "(32 KiB). Split long text into several observations",
            limit=MAX_OBSERVATION_BYTES,
            size=size,
        )
    return result


def check_observation_count(count: int, field: str) -> None:
    """The number of observations of one entity."""
    if count > MAX_OBSERVATIONS_PER_ENTITY:
        raise invalid(
            field,
            f"an entity can hold at most {MAX_OBSERVATIONS_PER_ENTITY} observations, "
            f"this one would hold {count}",
            limit=MAX_OBSERVATIONS_PER_ENTITY,
        )


def check_metadata(value: Mapping[str, object], field: str) -> None:
    """Metadata must be a JSON object of bounded size with string keys."""
    for key in value:
        text(key, f"{field} key")
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise invalid(field, f"must be plain JSON ({exc})") from exc
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise invalid(field, "contains a lone surrogate") from exc
    if size > MAX_METADATA_BYTES:
        raise invalid(
            field,
            f"is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}",
            limit=MAX_METADATA_BYTES,
        )


def check_unit_interval(value: object, field: str) -> float:
    """A number between 0 and 1 (relation strength and confidence)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(field, f"must be a number between 0 and 1, got {value!r}")
    number = float(value)
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise invalid(field, f"must be between 0 and 1, got {value!r}")
    return number


def check_limit(value: int, field: str, *, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(field, f"must be an integer from {low} to {high}, got {value!r}")
    return value
