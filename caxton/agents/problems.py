"""Problems found in an agent file, and the error that carries all of them at once.

A :class:`SpecProblem` is one finding: where it is (file, line, column, key path), what is wrong and
how to fix it. Validation collects every problem of a file before it gives up, so a user fixes a
file in one round instead of one error per attempt. :class:`AgentSpecError` is what the parser
raises; the HTTP validate route and the CLI render it from :meth:`AgentSpecError.as_dicts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from caxton.errors import JSONValue, ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Iterable


@attrs.frozen(kw_only=True)
class SpecProblem:
    """One finding in an agent file.

    Attributes:
        file: the file name (or ``"<api>"``) the text came from.
        line: 1-based line of the finding, or ``None`` when it has no place (a missing key).
        column: 1-based column, or ``None`` together with ``line``.
        key: dotted key path such as ``memory.search.max_results`` (empty for whole-file problems).
        message: what is wrong, naming the key and the value.
        suggestion: how to fix it, or an empty string.
    """

    file: str
    line: int | None
    column: int | None
    key: str
    message: str
    suggestion: str = ""

    @classmethod
    def unplaced(
        cls, file: str, message: str, *, key: str = "", suggestion: str = ""
    ) -> SpecProblem:
        """A finding with no line in the text: the whole file, or a key's missing neighbour."""
        return cls(
            file=file, line=None, column=None, key=key, message=message, suggestion=suggestion
        )

    def location(self) -> str:
        """Return ``"line 7, column 1"``, or an empty string when the problem has no place."""
        if self.line is None:
            return ""
        if self.column is None:
            return f"line {self.line}"
        return f"line {self.line}, column {self.column}"

    def render(self) -> str:
        """Return the problem as one line a person reads, with its place and its fix."""
        where = self.location()
        text = f"{self.message} at {where}" if where else self.message
        return f"{text}; {self.suggestion}" if self.suggestion else text

    def as_dict(self) -> dict[str, JSONValue]:
        """Return ``{field, message, line, column, suggestion}`` as the validate route answers."""
        return {
            "field": self.key,
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "suggestion": self.suggestion,
        }


def sort_problems(problems: Iterable[SpecProblem]) -> list[SpecProblem]:
    """Order problems as they appear in the file; problems without a place come last."""
    return sorted(
        problems,
        key=lambda p: (p.line is None, p.line or 0, p.column or 0, p.key, p.message),
    )


class AgentSpecError(ValidationFailed):
    """An agent file is invalid; ``problems`` lists every finding of the file.

    Args:
        source: the file name (or ``"<api>"``) the text came from.
        problems: every problem found, in any order (they are sorted by position).
    """

    code = "AGENT_SPEC_INVALID"
    http_status = 422

    def __init__(self, source: str, problems: Iterable[SpecProblem]) -> None:
        self.source = source
        self.problems: tuple[SpecProblem, ...] = tuple(sort_problems(problems))
        count = len(self.problems)
        head = f"{source}: {count} problem{'s' if count != 1 else ''} in agent file"
        lines = [head, *(f"  - {p.render()}" for p in self.problems)]
        errors: list[JSONValue] = [p.as_dict() for p in self.problems]
        super().__init__("\n".join(lines), details={"source": source, "errors": errors})

    def as_dicts(self) -> list[dict[str, JSONValue]]:
        """Return the problems as ``{field, message, line, column, suggestion}`` dicts."""
        return [p.as_dict() for p in self.problems]
