"""Checks of one agent file: bytes to text, TOML syntax, keys and types, then meaning.

Every check adds :class:`~caxton.agents.problems.SpecProblem` values to a :class:`SpecChecker` and
carries on, so one run reports every problem of the file. Values that pass are returned
"cleaned": durations in seconds, sizes in bytes, lists as tuples. The spec builders in
:mod:`caxton.agents.spec` read only cleaned values.
"""

from __future__ import annotations

import datetime
import difflib
import re
from typing import TYPE_CHECKING, Any, AnyStr, Final

import tomli

from caxton.agents.locate import KeyPath, Position, format_key_path, locate_keys
from caxton.agents.problems import SpecProblem
from caxton.agents.schema import (
    BUILTIN_TOOLS,
    ROOT_ONLY_KEYS,
    TEMPLATE_VARIABLES,
    TOOL_WILDCARD,
    KeyDoc,
    Kind,
    keys_by_table,
)
from caxton.llm.redact import redact_url
from caxton.units import DURATION_HELP, SIZE_HELP, format_size, parse_duration, parse_size

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

MAX_SPEC_BYTES: Final = 1024 * 1024
"""Largest agent file accepted; bigger files are refused before they are decoded or parsed."""

NAME_MAX_LENGTH: Final = 64
NAME_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
SEMVER_PATTERN: Final = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
#: Names that /api/v1/agents/<name> could not reach (fixed routes answer those paths).
RESERVED_NAMES: Final = frozenset({"performance", "validate"})
MAX_PROBLEMS: Final = 100
"""Most errors (and, separately, warnings) one check reports; the rest are counted in one line.

Each reported problem is located in the text, so without this bound a file of many small mistakes
would cost time in the square of its size (issue #13)."""
VERSION_MAX_LENGTH: Final = 256
_WASM_MAGIC: Final = b"\x00asm"
#: Keys whose values are credentials: problems never quote them.
_SECRET_KEYS: Final = frozenset({"api_key"})
_CLOSE_MATCH_CUTOFF: Final = 0.6

_KIND_PHRASES: Final[Mapping[Kind, str]] = {
    Kind.STRING: "a string",
    Kind.INTEGER: "an integer",
    Kind.NUMBER: "a number",
    Kind.BOOLEAN: "a boolean (true or false)",
    Kind.STRING_LIST: "an array of strings",
    Kind.DURATION: DURATION_HELP,
    Kind.SIZE: SIZE_HELP,
    Kind.TABLE: "a table",
    Kind.FREE_TABLE: "a table",
    Kind.TABLE_LIST: "an array of tables",
}

_SYNTAX_HINTS: Final[tuple[tuple[str, str], ...]] = (
    ("Cannot overwrite", "the key is set twice; keep only one of them"),
    ("Cannot declare", "the table is declared twice; merge the two tables into one"),
    ("Unterminated string", 'close the string with a quote; multi-line text goes in """…"""'),
    ("Illegal character '\\n'", 'close the string on this line; multi-line text goes in """…"""'),
    ("Expected \"'''\"", "close the multi-line string with '''"),
    ('Expected \'"""\'', 'close the multi-line string with """'),
    ("Invalid value", 'text values need quotes (key = "text"); arrays need a closing ]'),
    ("Expected '=' after a key", "write one key per line as key = value; quote keys with spaces"),
    ("Expected newline", "put each key = value on its own line"),
    ("Expected ']' at the end of a table", "close the table header with ]"),
    ("Unescaped '\\'", "double the backslash (\\\\) or use a literal string in single quotes"),
)


class _Invalid:
    """Marks a value that failed its check (and already has a problem)."""


INVALID: Final = _Invalid()


def describe_type(value: object) -> str:
    """Name the TOML type of a parsed value the way a user writes it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime.date | datetime.time):
        return "date/time"
    return type(value).__name__


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate closest to ``word``, when one is close enough to be a typo."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=_CLOSE_MATCH_CUTOFF)
    return matches[0] if matches else None


def size_problem(size: int, *, source: str) -> SpecProblem | None:
    """Return a problem when an agent file of ``size`` bytes is too large to be read."""
    if size <= MAX_SPEC_BYTES:
        return None
    return SpecProblem.unplaced(
        source,
        f"the agent file is {format_size(size)} ({size} bytes); "
        f"the limit is {format_size(MAX_SPEC_BYTES)}",
        suggestion="agent files hold settings and prompts; keep large documents in memory instead",
    )


def decode_text(data: bytes, *, source: str) -> tuple[str | None, SpecProblem | None]:
    """Decode agent file bytes as UTF-8 text, refusing binary files with a useful message."""
    if data.startswith(_WASM_MAGIC):
        return None, SpecProblem.unplaced(
            source,
            "the file is a WebAssembly module, not a TOML agent file",
            suggestion='write a manifest with [wasm] module = "<file>.wasm", or deploy it through '
            "the API with a manifest and wasm_module",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_column(data, exc.start, b"\n")
        byte = data[exc.start : exc.start + 1].hex()
        return None, SpecProblem(
            file=source,
            line=line,
            column=column,
            key="",
            message=f"the file is not UTF-8 text (byte 0x{byte})",
            suggestion="save the file as UTF-8; agent files are TOML text, not binary data",
        )
    if "\x00" in text:
        offset = text.index("\x00")
        line, column = _line_column(text, offset, "\n")
        return None, SpecProblem(
            file=source,
            line=line,
            column=column,
            key="",
            message="the file contains NUL bytes; it looks like binary data, not TOML text",
            suggestion="agent files are TOML text; check that the right file was given",
        )
    return text.removeprefix("\ufeff"), None


def _line_column(data: AnyStr, offset: int, newline: AnyStr) -> tuple[int, int]:
    """The 1-based line and column of ``offset`` (in bytes of bytes, in characters of text)."""
    return data.count(newline, 0, offset) + 1, offset - data.rfind(newline, 0, offset)


def parse_toml(text: str, *, source: str) -> tuple[dict[str, Any] | None, SpecProblem | None]:
    """Parse TOML text; a syntax error becomes a problem at tomli's line and column."""
    try:
        return tomli.loads(text), None
    except RecursionError:
        # tomli refuses keys of over 1000 parts and values nested too deeply this way
        return None, SpecProblem.unplaced(
            source,
            "invalid TOML: keys, tables or arrays are nested too deeply",
            suggestion="agent files need a few levels of nesting; flatten the deepest values",
        )
    except tomli.TOMLDecodeError as exc:
        hint = next((h for marker, h in _SYNTAX_HINTS if marker in exc.msg), "")
        return None, SpecProblem(
            file=source,
            line=exc.lineno,
            column=exc.colno,
            key="",
            message=f"invalid TOML: {exc.msg}",
            suggestion=hint or "fix the TOML syntax at this place",
        )


class SpecChecker:
    """Collects the problems of one parsed agent file against one set of documented keys.

    Args:
        source: the file name used in every problem.
        text: the file's text, used to locate keys and values.
        docs: the keys this kind of file may hold.
        other_docs: the keys of the other kind of agent file, for "only valid in ..." hints.
        other_kind: how to name the other kind of agent file in those hints.
    """

    def __init__(
        self,
        *,
        source: str,
        text: str,
        docs: tuple[KeyDoc, ...],
        other_docs: tuple[KeyDoc, ...] = (),
        other_kind: str = "",
    ) -> None:
        self.source = source
        self.lines = text.splitlines()
        self.locations = locate_keys(text)
        self.tables = keys_by_table(docs)
        self.docs = docs
        self.other_docs = other_docs
        self.other_kind = other_kind
        self.errors: list[SpecProblem] = []
        self.warnings: list[SpecProblem] = []
        self.dropped_errors = 0
        self.dropped_warnings = 0

    # -- reporting -------------------------------------------------------------------------

    def position(self, path: KeyPath) -> Position | None:
        """Return where ``path`` (or its closest located ancestor) is written."""
        return self.locations.find(path)

    def error(
        self, path: KeyPath, message: str, suggestion: str = "", *, at: Position | None = None
    ) -> None:
        """Record an error at ``path`` (or at the position ``at``); past
        :data:`MAX_PROBLEMS` errors, only count it."""
        if self.full:
            self.dropped_errors += 1
            return
        self.errors.append(self._problem(path, message, suggestion, at))

    def warn(
        self, path: KeyPath, message: str, suggestion: str = "", *, at: Position | None = None
    ) -> None:
        """Record a warning: the file is valid, but probably not what its author meant."""
        if len(self.warnings) >= MAX_PROBLEMS:
            self.dropped_warnings += 1
            return
        self.warnings.append(self._problem(path, message, suggestion, at))

    @property
    def full(self) -> bool:
        """Whether :data:`MAX_PROBLEMS` errors are recorded (later ones are only counted)."""
        return len(self.errors) >= MAX_PROBLEMS

    def all_errors(self) -> list[SpecProblem]:
        """The recorded errors, plus one that counts those past :data:`MAX_PROBLEMS`."""
        return [*self.errors, *self._counted(self.dropped_errors, "errors")]

    def all_warnings(self) -> list[SpecProblem]:
        """The recorded warnings, plus one that counts those past :data:`MAX_PROBLEMS`."""
        return [*self.warnings, *self._counted(self.dropped_warnings, "warnings")]

    def _problem(
        self, path: KeyPath, message: str, suggestion: str, at: Position | None
    ) -> SpecProblem:
        where = at or self.position(path)
        return SpecProblem(
            file=self.source,
            line=where.line if where else None,
            column=where.column if where else None,
            key=format_key_path(path),
            message=message,
            suggestion=suggestion,
        )

    def _counted(self, count: int, kind: str) -> list[SpecProblem]:
        if not count:
            return []
        return [
            SpecProblem.unplaced(
                self.source,
                f"{count} more {kind} not listed (only the first {MAX_PROBLEMS} are)",
                suggestion="fix the listed ones and validate again",
            )
        ]

    def find_text(self, path: KeyPath, needle: str) -> Position | None:
        """Return where ``needle`` first appears at or after the line of ``path``.

        Costs up to the length of the text, so it returns ``None`` without looking once the
        error list is full (the problem it would place is only counted)."""
        if self.full:
            return None
        start = self.position(path)
        first = start.line if start else 1
        for number in range(first, len(self.lines) + 1):
            column = self.lines[number - 1].find(needle)
            if column >= 0:
                return Position(line=number, column=column + 1)
        return start

    # -- structure: keys and types ---------------------------------------------------------

    def check_document(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Check every key of ``document``; return the cleaned values of the valid ones."""
        return self.check_table(document, "", ())

    def check_table(
        self, table: Mapping[str, Any], schema_path: str, path: KeyPath
    ) -> dict[str, Any]:
        """Check the keys of one table against the keys documented for ``schema_path``."""
        children = self.tables.get(schema_path, {})
        cleaned: dict[str, Any] = {}
        for key, value in table.items():
            doc = children.get(key) or children.get(TOOL_WILDCARD)
            if doc is None:
                self.unknown_key((*path, key), children)
                continue
            result = self.check_value(doc, value, (*path, key))
            if result is not INVALID:
                cleaned[key] = result
        for doc in children.values():
            if doc.required and doc.name not in table:
                self.error(
                    (*path, doc.name),
                    f"missing required key {format_key_path((*path, doc.name))}",
                    f"add {doc.name} = … ({doc.help})",
                )
        return cleaned

    def check_value(self, doc: KeyDoc, value: object, path: KeyPath) -> object:
        """Check one value against its documented kind; return it cleaned or :data:`INVALID`."""
        kind = doc.kind
        if kind is Kind.TABLE:
            if not isinstance(value, dict):
                return self.wrong_type(doc, value, path)
            return self.check_table(value, doc.path, path)
        if kind is Kind.FREE_TABLE:
            if not isinstance(value, dict):
                return self.wrong_type(doc, value, path)
            self.check_free_table(value, path)
            return dict(value)
        if kind is Kind.TABLE_LIST:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                return self.wrong_type(doc, value, path)
            return [self.check_table(item, doc.path, (*path, i)) for i, item in enumerate(value)]
        if kind is Kind.STRING_LIST:
            return self.check_string_list(doc, value, path)
        if kind is Kind.DURATION:
            return self.check_unit(doc, value, path, parse_duration)
        if kind is Kind.SIZE:
            return self.check_unit(doc, value, path, parse_size)
        return self.check_scalar(doc, value, path)

    def check_scalar(self, doc: KeyDoc, value: object, path: KeyPath) -> object:
        """Check a string, integer, number or boolean value, its choices and its range."""
        if doc.kind is Kind.STRING:
            if not isinstance(value, str):
                return self.wrong_type(doc, value, path)
            if doc.choices and value not in doc.choices:
                guess = closest(value, doc.choices)
                self.error(
                    path,
                    f"{format_key_path(path)} must be one of {', '.join(doc.choices)}, "
                    f"got {value!r}",
                    f"did you mean {guess}?" if guess else "",
                )
                return INVALID
            return value
        if doc.kind is Kind.BOOLEAN:
            return value if isinstance(value, bool) else self.wrong_type(doc, value, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.wrong_type(doc, value, path)
        if doc.kind is Kind.INTEGER:
            if isinstance(value, float) and not value.is_integer():
                self.error(path, f"{format_key_path(path)} must be a whole number, got {value}")
                return INVALID
            return self.check_range(doc, int(value), path)
        return self.check_range(doc, float(value), path)

    def check_range(self, doc: KeyDoc, value: float, path: KeyPath) -> object:
        """Check ``value`` against the documented minimum and maximum."""
        low, high = doc.minimum, doc.maximum
        if (low is None or value >= low) and (high is None or value <= high):
            return value
        name = format_key_path(path)
        shown = format_size(int(value)) if doc.kind is Kind.SIZE else f"{value:g}"
        if doc.kind is Kind.SIZE:
            bounds = [format_size(int(b)) if b is not None else None for b in (low, high)]
        else:
            bounds = [f"{b:g}" if b is not None else None for b in (low, high)]
        if bounds[0] is not None and bounds[1] is not None:
            rule = f"between {bounds[0]} and {bounds[1]}"
        elif bounds[0] is not None:
            rule = f"at least {bounds[0]}"
        else:
            rule = f"at most {bounds[1]}"
        self.error(path, f"{name} must be {rule}, got {shown}")
        return INVALID

    def check_string_list(self, doc: KeyDoc, value: object, path: KeyPath) -> object:
        """Check an array of strings; return it as a tuple."""
        if isinstance(value, str):
            self.error(
                path,
                f"{format_key_path(path)} must be an array of strings, got string",
                f'write {doc.name} = ["{value}"]',
            )
            return INVALID
        if not isinstance(value, list):
            return self.wrong_type(doc, value, path)
        valid = True
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.error(
                    (*path, index),
                    f"{format_key_path((*path, index))} must be a string, "
                    f"got {describe_type(item)}",
                    f'put the value in quotes: "{item}"',
                )
                valid = False
        return tuple(value) if valid else INVALID

    def check_unit(
        self,
        doc: KeyDoc,
        value: object,
        path: KeyPath,
        parse: Callable[[object], float],
    ) -> object:
        """Check a duration or a size with ``parse``; return seconds or bytes."""
        try:
            parsed = parse(value)
        except ValueError as exc:
            self.error(
                path,
                f"{format_key_path(path)} is not valid: {exc}",
                f"write it like {doc.name} = {doc.default!r}"
                if isinstance(doc.default, str)
                else "",
            )
            return INVALID
        if doc.kind is Kind.SIZE:
            return self.check_range(doc, parsed, path)
        return parsed

    def wrong_type(self, doc: KeyDoc, value: object, path: KeyPath) -> _Invalid:
        """Report that ``value`` has the wrong type for ``doc``, with a fix when one is likely."""
        got = describe_type(value)
        self.error(
            path,
            f"{format_key_path(path)} must be {_KIND_PHRASES[doc.kind]}, got {got}",
            _type_fix(doc, value),
        )
        return INVALID

    def unknown_key(self, path: KeyPath, siblings: Mapping[str, KeyDoc]) -> None:
        """Report a key nobody documented, suggesting the key that was probably meant."""
        key = str(path[-1])
        if self.full:
            self.dropped_errors += 1
            return
        if key in ROOT_ONLY_KEYS and len(path) > 1:
            self.misplaced_top_level_key(path)
            return
        names = [name for name in siblings if name != TOOL_WILDCARD]
        guess = closest(key, names)
        if guess is not None:
            suggestion = f"did you mean {guess}?"
        else:
            suggestion = self._elsewhere_hint(key, path) or (
                f"known keys here: {', '.join(names)}" if names else ""
            )
        self.error(path, f"unknown key {format_key_path(path)}", suggestion)

    def _elsewhere_hint(self, key: str, path: KeyPath) -> str:
        """Say where ``key`` belongs when it is documented in another table or agent kind."""
        homes = [doc.path for doc in self.docs if doc.name == key and doc.path != key]
        if homes and len(path) == 1:
            return f"did you mean {' or '.join(homes)}? write it below that table's [header]"
        if any(doc.path == format_key_path(path) for doc in self.other_docs):
            return f"{format_key_path(path)} is only valid in {self.other_kind}"
        return ""

    def check_free_table(self, table: Mapping[str, Any], path: KeyPath) -> None:
        """Catch top-level keys that landed in a free table because they follow its header."""
        for key in table:
            if key not in ROOT_ONLY_KEYS:
                continue
            where = self.locations.keys.get((*path, key))
            header = self.locations.header_before(where.line) if where else None
            if header is not None and header.path == path[: len(header.path)]:
                self.misplaced_top_level_key((*path, key))

    def misplaced_top_level_key(self, path: KeyPath) -> None:
        """Report the TOML trap: a top-level key written below a ``[table]`` header."""
        key = str(path[-1])
        where = self.position(path)
        header = self.locations.header_before(where.line) if where else None
        first = self.locations.first_header()
        message = f"top-level key {key} ended up in table [{format_key_path(path[:-1])}]"
        why = (
            f"it follows the {header.text} header at line {header.line}, and in TOML every key "
            "after a [table] header belongs to that table: "
            if header is not None
            else ""
        )
        place = f"the first table ({first.text} at line {first.line})" if first else "any table"
        self.error(path, message, f"{why}move {key} = … above {place}")

    # -- meaning -----------------------------------------------------------------------------

    def check_name(self, name: object) -> None:
        """Check the agent name: 1-64 characters, a letter then letters, digits, '-' or '_'."""
        if not isinstance(name, str):
            return
        path: KeyPath = ("name",)
        if not name:
            self.error(path, "name must not be empty", 'write name = "my-agent"')
        elif len(name) > NAME_MAX_LENGTH:
            self.error(
                path,
                f"name is {len(name)} characters long; the limit is {NAME_MAX_LENGTH}",
                f'shorten it, e.g. name = "{name[:NAME_MAX_LENGTH]}"',
            )
        elif NAME_PATTERN.fullmatch(name) is None:
            self.error(
                path,
                f"name {name!r} is not a valid agent name",
                "use letters, digits, '-' and '_', starting with a letter, e.g. "
                f'name = "{suggest_name(name)}"',
            )
        elif name in RESERVED_NAMES:
            self.error(
                path,
                f"name {name!r} is reserved: /api/v1/agents/{name} is an API path of its own",
                f'choose another name, e.g. name = "{name}-agent"',
            )

    def check_version(self, version: object) -> None:
        """Check that the version is semantic (MAJOR.MINOR.PATCH)."""
        if not isinstance(version, str):
            return
        if len(version) > VERSION_MAX_LENGTH:
            # bounded before the pattern runs: its alternatives backtrack on long input
            self.error(
                ("version",),
                f"version is {len(version)} characters long; the limit is {VERSION_MAX_LENGTH}",
                'write version = "MAJOR.MINOR.PATCH", e.g. "1.0.0"',
            )
            return
        if SEMVER_PATTERN.fullmatch(version):
            return
        self.error(
            ("version",),
            f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH)",
            f'write version = "{suggest_version(version)}"',
        )

    def check_capabilities(self, capabilities: Sequence[str]) -> None:
        """Capabilities are single words (letters, digits, '-', '_', '.', ':')."""
        for capability in capabilities:
            if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", capability) is None:
                self.error(
                    ("capabilities",),
                    f"capability {capability!r} is not a valid capability name",
                    "use letters, digits, '-', '_', '.' or ':' without spaces, "
                    'e.g. "data-analysis"',
                    at=self.find_text(("capabilities",), f'"{capability}"'),
                )
        self._warn_duplicates(("capabilities",), capabilities)

    def check_tools(self, tools: Sequence[str]) -> None:
        """Each tool is a built-in or ``wasm:<agent-name>``."""
        for tool in tools:
            problem = tool_problem(tool)
            if problem is not None:
                message, suggestion = problem
                self.error(
                    ("tools",),
                    message,
                    suggestion,
                    at=self.find_text(("tools",), f'"{tool}"'),
                )
        self._warn_duplicates(("tools",), tools)

    def check_tool_config(self, tool_config: Mapping[str, Any], tools: Sequence[str]) -> None:
        """Each ``[tool_config.<tool>]`` names a real tool that the agent lists in ``tools``."""
        for tool in tool_config:
            path: KeyPath = ("tool_config", tool)
            problem = tool_problem(tool)
            if problem is not None:
                self.error(path, problem[0], problem[1])
            elif tool not in tools:
                self.warn(
                    path,
                    f"[tool_config.{tool}] configures a tool that is not in tools",
                    f'add "{tool}" to tools, or remove the table',
                )

    def check_template(self, template: str, parameters: Mapping[str, Any]) -> None:
        """Every ``{{variable}}`` of ``user_prompt_template`` must be one Caxton fills in.

        One pass over the text (:func:`template_variables`): the time grows with the length of
        the template, never with its square (issue #13).
        """
        path: KeyPath = ("user_prompt_template",)
        known = [*TEMPLATE_VARIABLES, *(f"parameters.{key}" for key in parameters)]
        variables, unclosed = template_variables(template)
        for raw in variables:
            variable = raw.strip()
            if _template_variable_exists(variable, parameters):
                continue
            if self.full:
                self.dropped_errors += 1
                continue
            at = self.find_text(path, "{{" + raw + "}}")
            shown = _shorten(variable)
            if variable.startswith("parameters."):
                key = variable.removeprefix("parameters.")
                guess = closest(key, parameters)
                self.error(
                    path,
                    f"unknown parameter {_shorten(key)} in template variable {{{{{shown}}}}}",
                    f"did you mean {{{{parameters.{guess}}}}}?"
                    if guess
                    else f"add {_shorten(key)} = … under [parameters]",
                    at=at,
                )
                continue
            guess = closest(variable, known)
            self.error(
                path,
                f"unknown template variable {{{{{shown}}}}} in user_prompt_template",
                f"did you mean {{{{{guess}}}}}?"
                if guess
                else "available: " + ", ".join(f"{{{{{name}}}}}" for name in known),
                at=at,
            )
        if unclosed:
            self.error(
                path,
                "user_prompt_template has a {{ without a closing }}",
                "close every variable, e.g. {{request}}",
            )

    def check_llm(self, llm: Mapping[str, Any], path: KeyPath) -> None:
        """URLs must be http(s); keys written in clear text get a warning."""
        base_url = llm.get("base_url")
        if isinstance(base_url, str) and not base_url.startswith(("http://", "https://", "${")):
            self.error(
                (*path, "base_url"),
                f"{format_key_path((*path, 'base_url'))} must start with http:// or https://, "
                f"got {_shorten(redact_url(base_url))!r}",
                'e.g. base_url = "http://localhost:11434/v1"',
            )
        api_key = llm.get("api_key")
        if isinstance(api_key, str) and api_key and not api_key.startswith("${"):
            self.warn(
                (*path, "api_key"),
                f"{format_key_path((*path, 'api_key'))} is written in the file in clear text",
                'read it from the environment: api_key = "${OPENAI_API_KEY}"',
            )
        for index, fallback in enumerate(llm.get("fallback", ())):
            self.check_llm(fallback, (*path, "fallback", index))

    def check_deployment(self, deployment: Mapping[str, Any]) -> None:
        """A canary percentage only matters with the canary strategy."""
        strategy = deployment.get("strategy")
        if "canary_percentage" in deployment and strategy != "canary":
            self.warn(
                ("deployment", "canary_percentage"),
                'deployment.canary_percentage has no effect unless strategy = "canary"',
                'set strategy = "canary", or remove canary_percentage',
            )

    def _warn_duplicates(self, path: KeyPath, values: Sequence[str]) -> None:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                self.warn(
                    path,
                    f"{format_key_path(path)} lists {value!r} twice",
                    "remove the repeated entry",
                )
            seen.add(value)


def tool_problem(tool: str) -> tuple[str, str] | None:
    """Return ``(message, suggestion)`` when ``tool`` is neither built in nor ``wasm:<name>``."""
    if tool in BUILTIN_TOOLS:
        return None
    if tool.startswith("wasm:"):
        agent = tool.removeprefix("wasm:")
        if NAME_PATTERN.fullmatch(agent) and len(agent) <= NAME_MAX_LENGTH:
            return None
        return (
            f"tool {tool!r} does not name a valid WASM agent",
            "write wasm:<agent-name>, e.g. wasm:echo",
        )
    guess = closest(tool, BUILTIN_TOOLS)
    builtins = ", ".join(BUILTIN_TOOLS)
    hint = f"did you mean {guess}? " if guess else ""
    return (
        f"unknown tool {tool!r}",
        f"{hint}built-in tools are {builtins}; a WASM agent is used as wasm:<agent-name>",
    )


def template_variables(template: str) -> tuple[list[str], bool]:
    """Return the text between each ``{{`` and the next ``}}``, and whether a ``{{`` is unclosed.

    A linear scan with :meth:`str.find`: once no ``}}`` follows a ``{{``, none follows any later
    one either, so the scan stops there.
    """
    found: list[str] = []
    position = 0
    while True:
        start = template.find("{{", position)
        if start < 0:
            break
        end = template.find("}}", start + 2)
        if end < 0:
            break
        found.append(template[start + 2 : end])
        position = end + 2
    return found, template.count("{{") > len(found)


def _shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for a message (user text can be very long)."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def suggest_name(name: str) -> str:
    """Turn ``name`` into a valid agent name (``"My Agent!"`` -> ``"My-Agent"``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")
    if not cleaned or not cleaned[0].isalpha() or not cleaned.isascii():
        cleaned = f"agent-{cleaned}".rstrip("-")
    return cleaned[:NAME_MAX_LENGTH]


def suggest_version(version: str) -> str:
    """Turn ``version`` into a semantic version (``"v1.2"`` -> ``"1.2.0"``)."""
    numbers = re.findall(r"\d+", version)[:3]
    numbers += ["0"] * (3 - len(numbers))
    return ".".join(str(int(n)) for n in numbers)


def _template_variable_exists(variable: str, parameters: Mapping[str, Any]) -> bool:
    if variable in TEMPLATE_VARIABLES:
        return True
    if not variable.startswith("parameters."):
        return False
    value: Any = parameters
    for part in variable.removeprefix("parameters.").split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _type_fix(doc: KeyDoc, value: object) -> str:
    """Suggest the likely fix of a type error (quotes added or removed)."""
    if doc.kind in (Kind.NUMBER, Kind.INTEGER, Kind.BOOLEAN) and isinstance(value, str):
        return f"remove the quotes: {doc.name} = {value}"
    if doc.kind is Kind.STRING and isinstance(value, int | float | bool):
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        if doc.name in _SECRET_KEYS:
            shown = "…"  # problems are shown to every role: never repeat a credential
        return f'put the value in quotes: {doc.name} = "{shown}"'
    if doc.kind in (Kind.TABLE, Kind.FREE_TABLE):
        return f"write the settings under a [{doc.path}] header"
    if doc.help:
        return f"{doc.name}: {doc.help}"
    return ""
