"""Secrets out of text that a caller can read: URLs with credentials, known secret values.

Agent views, logs, events and errors show LLM endpoints and the errors of calls to them. A URL can
carry a credential (``https://user:pass@host``, ``?key=...``) and a provider's error can repeat
the key it was sent; :func:`redact_text` replaces each with ``***`` (issue #13). Every function
here runs in time linear in its input.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

MASK: Final = "***"
#: Query parameter names whose values are credentials (matched as substrings, any case).
SECRET_PARAMETER_WORDS: Final = (
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "signature",
    "sig",
    "credential",
    "session",
    "code",
)
# scheme://userinfo@ : userinfo has no '/', '@', whitespace or quote; bounded, so linear.
_USERINFO: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}://)[^/@\s\"'<>]{1,512}@")
# name=value in a query string (after ? or &); the value ends at &, #, whitespace or quote.
_QUERY_PARAMETER: Final = re.compile(r"([?&;])([A-Za-z0-9_.\-\[\]]{1,100})=([^&#\s\"'<>]*)")
# "Bearer <token>" / "Basic <token>" as an HTTP client error might quote a header.
_AUTH_SCHEME: Final = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
#: Known secrets shorter than this are not searched for (they would mask ordinary words).
MIN_SECRET_LENGTH: Final = 4


def _is_secret_parameter(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAMETER_WORDS)


def _mask_parameter(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    if not value or not _is_secret_parameter(name):
        return match.group(0)
    return f"{separator}{name}={MASK}"


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with URL credentials, auth headers and each of ``secrets`` masked.

    Args:
        text: any text shown to a caller: a URL, an error message, a log line.
        secrets: values known to be secret (API keys, expanded environment variables).
    """
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len)[::-1]:
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _QUERY_PARAMETER.sub(_mask_parameter, text)
    return _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {MASK}", text)


def redact_url(url: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``url`` fit to show: user and password, secret query values and ``secrets``
    masked."""
    return redact_text(url, secrets)
