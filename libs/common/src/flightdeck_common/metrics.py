"""Prometheus metrics: HTTP instrumentation plus a helper for domain metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

MetricT = TypeVar("MetricT", bound=MetricWrapperBase)

# Regexes (re.search). Long-lived event streams would distort the latency histogram.
NOT_INSTRUMENTED = ["^/healthz$", "^/readyz$", "^/metrics$", "/events$", "/events/stream$"]
# The routes of these paths are the paths themselves, all excluded above: requests to them
# skip the instrumentator, which would otherwise match the path against every route first.
_UNINSTRUMENTED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class _InstrumentatorMiddleware(PrometheusInstrumentatorMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in _UNINSTRUMENTED_PATHS:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def setup_metrics(app: FastAPI, collectors: Sequence[Collector] = ()) -> None:
    """Request count/latency histograms labelled by route template, served at ``/metrics``.

    HTTP metrics and ``collectors`` (metrics of this app's resources, such as its database
    pool) live in a registry of the app's own (several apps can share a process in tests);
    ``/metrics`` serves it together with the process-wide registry that holds domain
    metrics and the process collectors.
    """
    app_registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        app_registry.register(collector)
    Instrumentator(
        registry=app_registry,
        should_group_status_codes=False,
        should_ignore_untemplated=True,
        # The in-progress gauge is created per app and cannot be shared by several apps
        # in one process (tests); uvicorn's concurrency is visible from the latency histogram.
        should_instrument_requests_inprogress=False,
        excluded_handlers=NOT_INSTRUMENTED,
    ).instrument(
        app,
        latency_lowr_buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    cls, args, kwargs = app.user_middleware[0]  # add_middleware inserts the outermost first
    if cls is not PrometheusInstrumentatorMiddleware:
        raise RuntimeError("the instrumentator did not add its middleware")
    app.user_middleware[0] = Middleware(_InstrumentatorMiddleware, *args, **kwargs)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = generate_latest(REGISTRY) + generate_latest(app_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _declare(
    kind: type[MetricT],
    name: str,
    documentation: str,
    labelnames: tuple[str, ...],
    registry: CollectorRegistry,
    **kwargs: object,
) -> MetricT:
    # Several apps in one process (tests) share the registry: reuse instead of failing.
    existing = registry._names_to_collectors.get(name)
    if existing is not None:
        if not isinstance(existing, kind):
            raise ValueError(f"metric {name} already registered as {type(existing).__name__}")
        if tuple(getattr(existing, "_labelnames", ())) != tuple(labelnames):
            raise ValueError(f"metric {name} already registered with other labels")
        return existing
    return kind(name, documentation, labelnames, registry=registry, **kwargs)  # type: ignore[arg-type]


def counter(
    name: str,
    documentation: str,
    labelnames: tuple[str, ...] = (),
    registry: CollectorRegistry = REGISTRY,
) -> Counter:
    """Declare (or fetch) a domain counter, e.g. ``flightdeck_logins_total{result}``."""
    return _declare(Counter, name, documentation, labelnames, registry)


def gauge(
    name: str,
    documentation: str,
    labelnames: tuple[str, ...] = (),
    registry: CollectorRegistry = REGISTRY,
) -> Gauge:
    """Declare (or fetch) a domain gauge, e.g. ``flightdeck_outbox_pending``."""
    return _declare(Gauge, name, documentation, labelnames, registry)


def histogram(
    name: str,
    documentation: str,
    labelnames: tuple[str, ...] = (),
    buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS,
    registry: CollectorRegistry = REGISTRY,
) -> Histogram:
    """Declare (or fetch) a domain histogram."""
    return _declare(Histogram, name, documentation, labelnames, registry, buckets=buckets)


SERVICE_INFO = gauge(
    "flightdeck_service_info",
    "Constant 1, labelled with the service name and version.",
    ("service", "version"),
)
READINESS = gauge(
    "flightdeck_readiness_check_up",
    "1 when the named readiness check passed on its last run, 0 otherwise.",
    ("check",),
)
