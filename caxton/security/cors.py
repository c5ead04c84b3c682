"""CORS answers (``security.cors``) as pure functions of the request's headers.

Empty ``allowed_origins`` turns CORS off: no ``Access-Control-*`` header is ever sent, so
browsers keep their same-origin rule. ``"*"`` in the list allows every origin. Credentials
travel in ``Authorization`` or ``X-API-Key`` headers, never cookies, so
``Access-Control-Allow-Credentials`` is not needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from caxton.config.model import CorsConfig

#: Response headers a browser script may read.
EXPOSED_HEADERS = (
    "X-Request-ID",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)


@attrs.frozen(kw_only=True)
class CorsPolicy:
    origins: frozenset[str]
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    max_age_s: int

    @classmethod
    def from_config(cls, config: CorsConfig) -> CorsPolicy:
        return cls(
            origins=frozenset(o.rstrip("/") for o in config.allowed_origins),
            methods=tuple(m.upper() for m in config.allowed_methods),
            headers=tuple(config.allowed_headers),
            max_age_s=int(config.max_age),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allows_origin(self, origin: str) -> bool:
        return self.enabled and ("*" in self.origins or origin.rstrip("/") in self.origins)

    def preflight(
        self, origin: str, method: str, request_headers: str | None
    ) -> dict[str, str] | str:
        """Headers answering a preflight, or the reason it is refused."""
        if not self.allows_origin(origin):
            return f"origin {origin} is not in security.cors.allowed_origins"
        if method.upper() not in self.methods:
            return f"method {method} is not in security.cors.allowed_methods"
        allowed = {h.lower() for h in self.headers}
        asked = [h.strip() for h in (request_headers or "").split(",") if h.strip()]
        refused = [h for h in asked if h.lower() not in allowed]
        if refused:
            return f"header(s) {', '.join(refused)} not in security.cors.allowed_headers"
        return {
            **self._origin_headers(origin),
            "Access-Control-Allow-Methods": ", ".join(self.methods),
            "Access-Control-Allow-Headers": ", ".join(self.headers),
            "Access-Control-Max-Age": str(self.max_age_s),
        }

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for an actual (non-preflight) response to ``origin``."""
        if origin is None or not self.allows_origin(origin):
            return {"Vary": "Origin"} if self.enabled else {}
        return {
            **self._origin_headers(origin),
            "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
        }

    def _origin_headers(self, origin: str) -> dict[str, str]:
        if "*" in self.origins:
            return {"Access-Control-Allow-Origin": "*"}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
