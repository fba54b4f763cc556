"""Shed load instead of queueing it: a cap on the requests one process works on at once.

Past its capacity a service only gets slower: requests wait for database connections and
locks until clients time out, and the health checks of the load balancer wait behind them.
This middleware counts the requests in flight per group of paths; a request that would go
over its group's limit is answered at once with 503 problem+json ``overloaded`` and
``Retry-After: 1`` (its body is read and dropped first, so a proxy in front sees a clean
answer). GitHub records such a webhook delivery as failed; it can be redelivered.

Never counted or shed: the probes and ``/metrics`` (the load balancer must keep seeing an
overloaded instance as alive) and long-lived event streams (they would hold a slot for
hours; the number of streams is bounded by the clients, not by this cap).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from flightdeck_common.errors import ServiceUnavailable
from flightdeck_common.middleware.body_limit import DRAIN_CAP_BYTES, _declared_length, _drain

# Probes, metrics and event streams: never shed (see the module docstring).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
EXEMPT_PATTERN = re.compile(r"/events(/stream)?$")
RETRY_AFTER_SECONDS = 1

IN_FLIGHT = Gauge(
    "flightdeck_http_requests_in_flight",
    "Requests this process is working on, per concurrency group (probes and streams excluded).",
    ["group"],
    multiprocess_mode="livesum",
)
SHED = Counter(
    "flightdeck_http_requests_shed_total",
    "Requests answered 503 overloaded because their concurrency group was at its limit.",
    ["group"],
)


class Overloaded(ServiceUnavailable):
    code = "overloaded"
    title = "Service Overloaded"


class ConcurrencyLimitMiddleware:
    """Answer 503 ``overloaded`` when a path group already has ``limit`` requests in flight.

    ``max_concurrent`` is the limit of every path without an override (0: no limit);
    ``overrides`` maps a path prefix to a group with its own counter and limit (the longest
    matching prefix wins), e.g. ``{"/pipelines/webhooks/": 16}``: webhook deliveries then
    cannot take the slots of readers, nor readers theirs.
    """

    def __init__(
        self, app: ASGIApp, *, max_concurrent: int, overrides: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.groups: list[tuple[str, int]] = sorted(
            (overrides or {}).items(), key=lambda kv: -len(kv[0])
        )
        self.default_limit = max_concurrent
        self.in_flight: dict[str, int] = {"default": 0, **{p: 0 for p, _ in self.groups}}

    def group_for(self, path: str) -> tuple[str, int]:
        for prefix, limit in self.groups:
            if path.startswith(prefix):
                return prefix, limit
        return "default", self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or path in EXEMPT_PATHS or EXEMPT_PATTERN.search(path):
            await self.app(scope, receive, send)
            return
        group, limit = self.group_for(path)
        if limit <= 0:
            await self.app(scope, receive, send)
            return
        if self.in_flight[group] >= limit:
            SHED.labels(group).inc()
            await _shed(scope, receive, send)
            return
        # Single-threaded event loop: the check above and this increment are atomic.
        self.in_flight[group] += 1
        gauge = IN_FLIGHT.labels(group)
        gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[group] -= 1
            gauge.dec()


async def _shed(scope: Scope, receive: Receive, send: Send) -> None:
    error = Overloaded(
        "This instance is at its limit of concurrent requests; retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
    declared = _declared_length(scope)
    # A small body is read and dropped (keep-alive stays usable, no reset at the proxy);
    # a large or unreadable one is left on the wire and the connection closed.
    bodiless = declared is None and scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS")
    if bodiless or (
        declared is not None and 0 <= declared <= DRAIN_CAP_BYTES and await _drain(receive)
    ):
        await error.to_response()(scope, receive, send)
        return
    error.headers = {**(error.headers or {}), "Connection": "close"}
    await error.to_response()(scope, receive, send)
