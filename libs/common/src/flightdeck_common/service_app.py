"""The app factory: a Flightdeck service is ``create_service_app(...)`` plus its routers."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncEngine

from flightdeck_common.db import (
    create_engine,
    create_probe_engine,
    create_read_sessionmaker,
    create_sessionmaker,
)
from flightdeck_common.db_pool import DatabasePoolCollector
from flightdeck_common.errors import install_error_handlers
from flightdeck_common.health import DATABASE_CHECK, REDIS_CHECK, ReadinessCheck, health_router
from flightdeck_common.logging import configure_logging
from flightdeck_common.metrics import SERVICE_INFO, setup_metrics
from flightdeck_common.middleware import (
    AccessLogMiddleware,
    BodyReadTimeoutMiddleware,
    BodySizeLimitMiddleware,
    CatchAllMiddleware,
    JsonDepthLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from flightdeck_common.middleware.overload import ConcurrencyLimitMiddleware
from flightdeck_common.migrations import upgrade_to_head
from flightdeck_common.openapi import document_problems
from flightdeck_common.rate_limit import RateLimiter, limits_from_settings
from flightdeck_common.redis_client import create_redis
from flightdeck_common.resources import Resources
from flightdeck_common.sentry import init_sentry
from flightdeck_common.settings import CommonSettings

logger = logging.getLogger(__name__)

LifespanHook = Callable[[FastAPI, Resources], AbstractAsyncContextManager[None]]


@dataclass
class ServiceSpec:
    """What makes one service different from the others."""

    title: str
    description: str
    version: str
    routers: Sequence[APIRouter] = ()
    migrations_dir: Path | None = None
    readiness_checks: Sequence[ReadinessCheck] = (DATABASE_CHECK, REDIS_CHECK)
    body_limit_overrides: dict[str, int] = field(default_factory=dict)
    # Path prefix -> its JSON nesting limit, or None where the route checks the body itself.
    json_depth_overrides: dict[str, int | None] = field(default_factory=dict)
    lifespan_hooks: Sequence[LifespanHook] = ()
    openapi_tags: list[dict[str, str]] = field(default_factory=list)
    # Paths polled by machines: successful requests are logged at DEBUG only.
    quiet_paths: frozenset[str] = frozenset()
    # Path prefixes with their own cap of concurrent requests (see middleware/overload.py).
    concurrency_limit_overrides: dict[str, int] = field(default_factory=dict)


def operation_id(route: APIRoute) -> str:
    """Operation ids are the handler names (``list_pipelines``) so generated clients read well."""
    return route.name


def create_service_app(settings: CommonSettings, spec: ServiceSpec) -> FastAPI:
    """Build a service: middleware, problem+json errors, health, metrics, docs under its prefix."""
    configure_logging(settings.service_name, settings.log_level, json_lines=settings.log_json)
    init_sentry(settings, spec.version)
    prefix = settings.public_prefix

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            resources = await _open_resources(settings, spec, stack)
            app.state.resources = resources
            for hook in spec.lifespan_hooks:
                await stack.enter_async_context(hook(app, resources))
            logger.info("%s service started", settings.service_name)
            yield
            logger.info("%s service stopping", settings.service_name)

    app = FastAPI(
        title=spec.title,
        description=spec.description,
        version=spec.version,
        lifespan=lifespan,
        docs_url=f"{prefix}/docs",
        redoc_url=f"{prefix}/redoc",
        openapi_url=f"{prefix}/openapi.json",
        swagger_ui_oauth2_redirect_url=f"{prefix}/docs/oauth2-redirect",
        generate_unique_id_function=operation_id,
        openapi_tags=spec.openapi_tags or None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(health_router(spec.readiness_checks))
    for router in spec.routers:
        app.include_router(router)
    _check_unique_operation_ids(app)
    _check_async_dependencies(app)
    document_problems(app)
    setup_metrics(app, collectors=[DatabasePoolCollector(lambda: _engine_of(app))])
    SERVICE_INFO.labels(settings.service_name, spec.version).set(1)

    # Added innermost first: the last one added is the outermost.
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(
        JsonDepthLimitMiddleware,
        max_depth=settings.max_json_depth,
        overrides=spec.json_depth_overrides,
    )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        overrides=spec.body_limit_overrides,
    )
    app.add_middleware(
        BodyReadTimeoutMiddleware, timeout_seconds=settings.body_read_timeout_seconds
    )
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        max_concurrent=settings.max_concurrent_requests,
        overrides=spec.concurrency_limit_overrides,
    )
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Last-Event-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(
        SecurityHeadersMiddleware,
        docs_paths=(f"{prefix}/docs", f"{prefix}/redoc", f"{prefix}/docs/oauth2-redirect"),
        hsts_max_age=settings.hsts_max_age_seconds,
    )
    app.add_middleware(AccessLogMiddleware, quiet_paths=spec.quiet_paths)
    app.add_middleware(RequestIdMiddleware)
    return app


def _engine_of(app: FastAPI) -> AsyncEngine | None:
    """The app's engine once its lifespan has made it."""
    resources: Resources | None = getattr(app.state, "resources", None)
    return resources.engine if resources is not None else None


async def _open_resources(
    settings: CommonSettings, spec: ServiceSpec, stack: AsyncExitStack
) -> Resources:
    engine = create_engine(settings)
    stack.push_async_callback(engine.dispose)
    probe_engine = create_probe_engine(settings)
    if probe_engine is not None:
        stack.push_async_callback(probe_engine.dispose)
    if settings.migrate_on_start and spec.migrations_dir is not None:
        await upgrade_to_head(engine, spec.migrations_dir)
    redis = None
    if settings.redis_url:
        redis = create_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
    return Resources(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        read_sessionmaker=create_read_sessionmaker(engine),
        probe_engine=probe_engine,
        redis=redis,
        rate_limiter=RateLimiter(settings.redis_url, limits_from_settings(settings)),
    )


def _check_unique_operation_ids(app: FastAPI) -> None:
    """Refuse two documented routes with one handler name (clients would clash).

    The operation id of each method of a documented route is what FastAPI's schema uses
    (``route.operation_id`` or its ``unique_id``); read from the routes, not by generating
    the whole schema, which would cost more than the rest of building the app.
    """
    seen: dict[str, str] = {}
    # Included routers are resolved lazily (FastAPI >= 0.165): walk their route contexts.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        op_id = route.operation_id or route.unique_id
        for method in sorted(route.methods or ()):
            where = f"{method} {route.path}"
            if op_id in seen:
                raise RuntimeError(f"duplicate operation id {op_id!r}: {seen[op_id]} and {where}")
            seen[op_id] = where


def _check_async_dependencies(app: FastAPI) -> None:
    """Refuse routes with plain ``def`` dependencies: FastAPI runs those in its thread pool,
    a thread hop per request and dependency (wrap lookups in ``dependencies.inline``)."""
    found: set[str] = set()

    def walk(dependant: Dependant, where: str) -> None:
        for sub in dependant.dependencies:
            call = sub.call
            if call is not None and not _is_async_callable(call):
                found.add(f"{getattr(call, '__qualname__', repr(call))} (in {where})")
            walk(sub, where)

    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            walk(route.dependant, f"{sorted(route.methods or ())} {route.path}")
    if found:
        raise RuntimeError(
            "plain def dependencies (thread pool per request): " + ", ".join(sorted(found))
        )


def _is_async_callable(call: Callable[..., Any]) -> bool:
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)
