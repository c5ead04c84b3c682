"""The ``llm`` component: the outbound HTTP clients, breakers and metrics of config agents.

One ``httpx.AsyncClient`` carries every LLM call (connections to a provider are reused across
agents and versions), a second one carries the ``http_client`` tool's fetches (agents' own
traffic never shares a pool, or credentials, with provider calls). Both are opened when the
component starts and closed when it stops, after the registry that uses them.
"""

from __future__ import annotations

import http.cookiejar
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import httpx
import trio
from prometheus_client import Counter, Histogram

from caxton.llm import Backoff, Breakers, make_client
from caxton.tracing import inject

if TYPE_CHECKING:
    from collections.abc import Sequence

    from caxton.llm.client import LLMClient
    from caxton.llm.settings import ProviderSettings
    from caxton.metrics import Metrics

#: Connections kept per pool.
MAX_CONNECTIONS = 100


@attrs.frozen(kw_only=True)
class LLMMetrics:
    """LLM call metrics by agent and provider (DESIGN §9)."""

    calls: Histogram
    tokens: Counter
    errors: Counter

    @classmethod
    def register(cls, metrics: Metrics) -> LLMMetrics:
        return cls(
            calls=metrics.histogram(
                "caxton_llm_call_duration_seconds",
                "Time of one LLM call (request to last token), by agent and provider.",
                ["agent", "provider"],
            ),
            tokens=metrics.counter(
                "caxton_llm_tokens",
                "Tokens used by LLM calls, by agent, provider, kind (input, output, cache_read, "
                "cache_write) and key (the caller: an API key's name or a token's subject; "
                'past usage.max_metric_keys callers, "other").',
                ["agent", "provider", "kind", "key"],
            ),
            errors=metrics.counter(
                "caxton_llm_errors",
                "Failed LLM calls by agent, provider and error code.",
                ["agent", "provider", "code"],
            ),
        )


class LLMService:
    """Owns the HTTP pools and the per-endpoint breakers; builds clients for agents.

    Args:
        metrics: the server's registry.
        failure_threshold: consecutive failures that open an endpoint's breaker.
        cooldown_s: how long an open breaker refuses calls before a trial call.
        backoff: retry delays when a provider sends no ``Retry-After``.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        backoff: Backoff | None = None,
        traced: bool = False,
    ) -> None:
        self.metrics = LLMMetrics.register(metrics)
        #: send ``traceparent`` on every LLM call (issue #18; only with tracing on)
        self.traced = traced
        self.breakers = Breakers(failure_threshold=failure_threshold, cooldown_s=cooldown_s)
        self.backoff = backoff
        self._http: httpx.AsyncClient | None = None
        self._tools_http: httpx.AsyncClient | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[LLMService] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Open both pools, report ready, and keep them until cancelled."""
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS)
        hooks = {"request": [_send_traceparent]} if self.traced else None
        async with (
            httpx.AsyncClient(timeout=None, limits=limits, event_hooks=hooks) as http,
            # http_client keeps no cookie: one agent's session never reaches another's call
            httpx.AsyncClient(timeout=None, limits=limits, cookies=_no_cookies()) as tools_http,
        ):
            self._http, self._tools_http = http, tools_http
            try:
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                self._http = self._tools_http = None

    @property
    def tools_http(self) -> httpx.AsyncClient | None:
        """The pool of the ``http_client`` tool (``None`` before start and after stop)."""
        return self._tools_http

    def client(self, chain: Sequence[ProviderSettings]) -> LLMClient:
        """A client for ``chain`` (primary first) over the shared pool and breakers."""
        if self._http is None:
            raise RuntimeError("the llm component is not running")
        return make_client(chain, http=self._http, breakers=self.breakers, backoff=self.backoff)

    def statistics(self) -> dict[str, Any]:
        """Breaker state per endpoint, for health views."""
        return {
            f"{provider} {url}": attrs.asdict(stats)
            for (provider, url), stats in self.breakers.statistics().items()
        }


async def _send_traceparent(request: httpx.Request) -> None:
    """The LLM call continues the agent's trace: its ``traceparent`` goes to the provider."""
    carrier: dict[str, str] = {}
    inject(carrier)
    request.headers.update(carrier)


def _no_cookies() -> http.cookiejar.CookieJar:
    """A cookie jar that stores nothing (its policy refuses every domain)."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
