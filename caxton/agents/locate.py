"""Where keys sit in a TOML text: line and column of table headers and ``key =`` lines.

tomli returns plain dicts without positions, so validation messages would have to say "somewhere in
the file". This scanner reads the text once, follows strings (including multi-line ones), comments
and brackets well enough to tell a real ``key =`` line or ``[table]`` header from text inside a
string, and records the position of each key path. Keys inside inline tables are not located; a
lookup for them falls back to the closest located ancestor, which is the line a user has to edit.

The scanner runs only on text that tomli has already parsed, so it never reports syntax errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

KeyPart = str | int
KeyPath = tuple[KeyPart, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@attrs.frozen(kw_only=True)
class Position:
    """A 1-based line and column in the text."""

    line: int
    column: int


@attrs.frozen(kw_only=True)
class TableHeader:
    """A ``[table]`` or ``[[array.of.tables]]`` header and the key path it opens."""

    path: KeyPath
    line: int
    column: int
    text: str


@attrs.frozen(kw_only=True)
class KeyLocations:
    """Positions of the keys and table headers of one TOML text."""

    keys: Mapping[KeyPath, Position]
    headers: tuple[TableHeader, ...]

    def find(self, path: KeyPath) -> Position | None:
        """Return the position of ``path``, else of its closest located ancestor, else ``None``."""
        for end in range(len(path), 0, -1):
            position = self.keys.get(path[:end])
            if position is not None:
                return position
        return None

    def header_before(self, line: int) -> TableHeader | None:
        """Return the table header that the statement on ``line`` was written under."""
        found: TableHeader | None = None
        for header in self.headers:
            if header.line > line:
                break
            found = header
        return found

    def first_header(self) -> TableHeader | None:
        """Return the first table header of the text, where top-level keys stop."""
        return self.headers[0] if self.headers else None


def format_key_path(path: KeyPath) -> str:
    """Render ``("llm", "fallback", 0, "model")`` as ``llm.fallback[0].model``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else f'"{part}"'
            text = f"{text}.{name}" if text else name
    return text


def locate_keys(text: str) -> KeyLocations:
    """Scan ``text`` (valid TOML) and return where each table header and ``key =`` line is."""
    scanner = _Scanner()
    for number, line in enumerate(text.splitlines(), start=1):
        scanner.scan_line(number, line)
    return KeyLocations(keys=dict(scanner.keys), headers=tuple(scanner.headers))


class _Scanner:
    """Line-by-line state: the current table, open multi-line strings and open brackets."""

    def __init__(self) -> None:
        self.keys: dict[KeyPath, Position] = {}
        self.headers: list[TableHeader] = []
        self.table: KeyPath = ()
        self.array_tables: dict[KeyPath, int] = {}
        self.open_string: str | None = None
        self.depth = 0

    def scan_line(self, number: int, line: str) -> None:
        position = 0
        if self.open_string is not None:
            end = _find_string_end(line, 0, self.open_string)
            if end is None:
                return
            self.open_string = None
            position = end
        elif self.depth == 0:
            position = self._scan_statement(number, line)
        self._scan_value(line, position)

    def _scan_statement(self, number: int, line: str) -> int:
        """Record a header or a ``key =`` starting ``line``; return where the value starts."""
        start = len(line) - len(line.lstrip())
        rest = line[start:]
        if rest.startswith("["):
            self._scan_header(number, start, line)
            return len(line)
        parsed = _parse_key(line, start)
        if parsed is None:
            return len(line)
        parts, end = parsed
        if not line[end:].startswith("="):
            return len(line)
        path = self.table + tuple(parts)
        for size in range(len(self.table) + 1, len(path) + 1):
            self.keys.setdefault(path[:size], Position(line=number, column=start + 1))
        return end + 1

    def _scan_header(self, number: int, start: int, line: str) -> None:
        is_array = line.startswith("[[", start)
        parsed = _parse_key(line, start + (2 if is_array else 1))
        if parsed is None:
            return
        parts, end = parsed
        closing = "]]" if is_array else "]"
        text = line[start : line.find(closing, end) + len(closing)] if closing in line else line
        path = self._resolve_arrays(tuple(parts))
        if is_array:
            index = self.array_tables.get(path, -1) + 1
            self.array_tables[path] = index
            path = (*path, index)
        self.table = path
        self.keys.setdefault(path, Position(line=number, column=start + 1))
        self.headers.append(TableHeader(path=path, line=number, column=start + 1, text=text))

    def _resolve_arrays(self, parts: tuple[str, ...]) -> KeyPath:
        """Insert the current index after every parent that names an array of tables."""
        resolved: KeyPath = ()
        for number, part in enumerate(parts, start=1):
            resolved = (*resolved, part)
            if number < len(parts) and resolved in self.array_tables:
                resolved = (*resolved, self.array_tables[resolved])
        return resolved

    def _scan_value(self, line: str, position: int) -> None:
        """Follow strings, comments and brackets from ``position`` to the end of ``line``."""
        index = position
        while index < len(line):
            char = line[index]
            if char == "#":
                return
            if char in "\"'":
                delimiter = char * 3 if line.startswith(char * 3, index) else char
                end = _find_string_end(line, index + len(delimiter), delimiter)
                if end is None:
                    if len(delimiter) == 3:
                        self.open_string = delimiter
                    return
                index = end
                continue
            if char in "[{":
                self.depth += 1
            elif char in "]}":
                self.depth = max(0, self.depth - 1)
            index += 1


def _find_string_end(line: str, start: int, delimiter: str) -> int | None:
    """Return the index just after the closing ``delimiter``, or ``None`` if the line ends first."""
    escapes = delimiter.startswith('"')
    index = start
    while index < len(line):
        if escapes and line[index] == "\\":
            index += 2
            continue
        if line.startswith(delimiter, index):
            end = index + len(delimiter)
            # A multi-line string may end with up to two extra quotes: `""""` closes after 4.
            while len(delimiter) == 3 and end < len(line) and line[end] == delimiter[0]:
                end += 1
            return end
        index += 1
    return None


def _parse_key(line: str, start: int) -> tuple[list[str], int] | None:
    """Parse a dotted key at ``start``; return its parts and the index after trailing spaces."""
    parts: list[str] = []
    index = start
    while True:
        index = _skip_spaces(line, index)
        if index >= len(line):
            return None
        char = line[index]
        if char in "\"'":
            end = _find_string_end(line, index + 1, char)
            if end is None:
                return None
            raw = line[index + 1 : end - 1]
            parts.append(_unescape(raw) if char == '"' else raw)
            index = end
        else:
            match = _BARE_KEY.match(line, index)
            if match is None:
                return None
            parts.append(match.group())
            index = match.end()
        index = _skip_spaces(line, index)
        if index < len(line) and line[index] == ".":
            index += 1
            continue
        return parts, index


def _skip_spaces(line: str, index: int) -> int:
    while index < len(line) and line[index] in " \t":
        index += 1
    return index


def _unescape(raw: str) -> str:
    """Undo the common escapes of a basic-string key (enough to match tomli's key)."""
    return raw.replace('\\"', '"').replace("\\\\", "\\")
