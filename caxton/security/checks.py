"""The security settings ``caxton start`` refuses, for ``caxton validate`` (files read too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from caxton.config.checks import auth_required
from caxton.security.errors import KeyFileError
from caxton.security.gate import security_refusals as refusals
from caxton.security.keys import read_key_file

if TYPE_CHECKING:
    from caxton.config.model import CaxtonConfig


def security_refusals(config: CaxtonConfig) -> list[str]:
    """Security settings ``caxton start`` refuses: no caller could ever authenticate, a key
    file that exists but is malformed (naming its line), ..."""
    problems = refusals(config)
    key_file = config.security.api_keys.key_file
    if auth_required(config) and key_file and config.resolve_path(key_file).exists():
        try:
            read_key_file(config.resolve_path(key_file))
        except KeyFileError as exc:
            problems.append(exc.message)
    return problems
