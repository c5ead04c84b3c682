from __future__ import annotations

import pytest

from caxton.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("24h", 86400.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("7d", 604800.0),
        (5, 5.0),
        (0.25, 0.25),
        ("10", 10.0),
        ("2 m", 120.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "10q", "-5", True, None, "5s5", [1]])
def test_bad_durations_say_what_is_accepted(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration such as"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100KB", 100_000),
        ("10MB", 10_000_000),
        ("10MiB", 10 * 1024**2),
        ("1GB", 10**9),
        ("512", 512),
        (2048, 2048),
        ("1.5KiB", 1536),
        ("64b", 64),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "big", "10XB", -1, False, "1 0MB"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match=r"size"):
        parse_size(bad)


def test_formatting_round_trips() -> None:
    for seconds in (0.5, 30.0, 90.0, 3600.0, 86400.0):
        assert parse_duration(format_duration(seconds)) == seconds
    for size in (512, 100_000, 10 * 1024**2, 10**9):
        assert parse_size(format_size(size)) == size
