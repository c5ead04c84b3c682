"""The names MCP tools are offered to the model under.

Providers accept function names matching ``^[a-zA-Z0-9_-]{1,64}$``; an MCP server may name
its tools anything (dots, slashes, spaces, 200 characters). A tool ``read.file`` of the server
``files`` is offered as ``mcp_files_read_file``; a name that is too long is cut and given a
short hash, and a name that is already taken (by a built-in tool or another MCP tool) gets a
``_2``, ``_3``... suffix, so every offered name is unique and stable for one tool list.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection

MAX_NAME: Final = 64
VALID_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NOT_ALLOWED: Final = re.compile(r"[^A-Za-z0-9_-]+")


def offered_name(server: str, tool: str, taken: Collection[str]) -> str:
    """The function name for ``tool`` of ``server``, not in ``taken`` (compared without case:
    some providers fold it)."""
    base = "mcp_" + _NOT_ALLOWED.sub("_", server) + "_" + (_NOT_ALLOWED.sub("_", tool) or "tool")
    if len(base) > MAX_NAME:
        digest = hashlib.blake2s(tool.encode(), digest_size=4).hexdigest()
        base = base[: MAX_NAME - 9] + "_" + digest
    folded = {name.lower() for name in taken}
    name, counter = base, 1
    while name.lower() in folded:
        counter += 1
        suffix = f"_{counter}"
        name = base[: MAX_NAME - len(suffix)] + suffix
    return name
