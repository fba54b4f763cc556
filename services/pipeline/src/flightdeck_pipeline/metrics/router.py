"""Stats, history and DORA endpoints (viewer), answered through the metrics cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_common.auth.dependencies import USER_AUTH_RESPONSES, CurrentUser
from flightdeck_common.db import session_scope, utcnow
from flightdeck_common.dependencies import inline
from flightdeck_common.errors import problem_responses
from flightdeck_common.params import UtcDatetime
from flightdeck_common.resources import get_resources
from flightdeck_pipeline.metrics.cache import MetricsCache
from flightdeck_pipeline.metrics.dora import dora_metrics
from flightdeck_pipeline.metrics.exceptions import InvalidTimeWindow
from flightdeck_pipeline.metrics.history import MAX_DAYS, MIN_DAYS, history_range, run_history
from flightdeck_pipeline.metrics.schemas import DoraReport, RunHistory, RunStats
from flightdeck_pipeline.metrics.stats import run_stats
from flightdeck_pipeline.settings import Settings

MAX_FILTER_VALUES = 50
MAX_WINDOW_DAYS = 365

router = APIRouter(prefix="/pipelines", tags=["metrics"], responses=USER_AUTH_RESPONSES)


def get_metrics_cache(request: Request) -> MetricsCache:
    """The app's ``MetricsCache`` (made in the lifespan, kept at ``app.state.metrics_cache``)."""
    cache = getattr(request.app.state, "metrics_cache", None)
    if not isinstance(cache, MetricsCache):
        raise RuntimeError("no MetricsCache at app.state.metrics_cache: create it in the lifespan")
    return cache


def get_pipeline_settings(request: Request) -> Settings:
    settings = request.app.state.settings
    if not isinstance(settings, Settings):
        raise RuntimeError("the app was not built with the pipeline Settings")
    return settings


def get_read_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    """Read-only sessions (as ``ReadSessionDep``'s), opened by a computation only: a cached
    answer needs no session at all."""
    resources = get_resources(request)
    return resources.read_sessionmaker or resources.sessionmaker


MetricsCacheDep = Annotated[MetricsCache, Depends(inline(get_metrics_cache))]
ReadSessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(inline(get_read_sessions))]
PipelineSettingsDep = Annotated[Settings, Depends(inline(get_pipeline_settings))]
RepositoryQuery = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None,
    Query(
        max_length=MAX_FILTER_VALUES,
        description="Repository full name (`owner/name`); repeat for several (a team).",
    ),
]
EnvironmentQuery = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None,
    Query(
        max_length=MAX_FILTER_VALUES,
        description="Deployment environment (case-insensitive); repeat for several.",
    ),
]


def _distinct(values: list[str] | None) -> list[str]:
    return sorted(set(values or []))


def _json(body: bytes) -> Response:
    """The cache's answer as it is: the bytes were made from the response model (see
    ``MetricsCache``), so FastAPI neither validates nor encodes them again."""
    return Response(content=body, media_type="application/json")


@router.get(
    "/stats",
    response_model=RunStats,
    status_code=200,
    summary="Run statistics",
    responses=problem_responses(InvalidTimeWindow),
)
async def read_stats(
    sessions: ReadSessionsDep,
    viewer: CurrentUser,
    cache: MetricsCacheDep,
    repository: RepositoryQuery = None,
    since: Annotated[
        UtcDatetime | None, Query(description="Runs created at or after (ISO 8601 with offset).")
    ] = None,
    until: Annotated[
        UtcDatetime | None, Query(description="Runs created before (ISO 8601 with offset).")
    ] = None,
) -> Response:
    """Run counts, success rate and duration percentiles over a time window."""
    if since is not None and until is not None and since >= until:
        raise InvalidTimeWindow("`since` must be before `until`.")
    repositories = _distinct(repository)
    params = {"repositories": repositories, "since": since, "until": until}

    async def compute() -> RunStats:
        async with session_scope(sessions) as session:
            return await run_stats(
                session, repositories=repositories or None, since=since, until=until
            )

    return _json(await cache.get_or_compute("stats", params, compute))


@router.get("/history", response_model=RunHistory, status_code=200, summary="Runs per day")
async def read_history(
    sessions: ReadSessionsDep,
    viewer: CurrentUser,
    cache: MetricsCacheDep,
    days: Annotated[
        int, Query(ge=MIN_DAYS, le=MAX_DAYS, description="Days covered, today included.")
    ] = 7,
    repository: RepositoryQuery = None,
    per_repository: Annotated[
        bool, Query(description="One row per day and repository instead of per day.")
    ] = False,
) -> Response:
    """Runs per UTC day over the last days, zero-filled."""
    repositories = _distinct(repository)
    now = utcnow()
    _, since, until = history_range(days, now)
    params = {
        "days": days,
        "repositories": repositories,
        "per_repository": per_repository,
        "since": since,  # the answer changes with the day
    }

    async def compute() -> RunHistory:
        async with session_scope(sessions) as session:
            items = await run_history(
                session,
                days=days,
                repositories=repositories or None,
                now=now,
                per_repository=per_repository,
            )
        return RunHistory(
            days=days,
            per_repository=per_repository,
            repositories=repositories,
            since=since,
            until=until,
            items=items,
        )

    return _json(await cache.get_or_compute("history", params, compute))


@router.get("/dora", response_model=DoraReport, status_code=200, summary="DORA metrics")
async def read_dora(
    sessions: ReadSessionsDep,
    viewer: CurrentUser,
    cache: MetricsCacheDep,
    settings: PipelineSettingsDep,
    window_days: Annotated[
        int, Query(ge=1, le=MAX_WINDOW_DAYS, description="Window length in days, ending now.")
    ] = 30,
    repository: RepositoryQuery = None,
    environment: EnvironmentQuery = None,
) -> Response:
    """The four DORA metrics of the selected repositories and environments."""
    repositories = _distinct(repository)
    environments = sorted({e.lower() for e in environment or []})
    production = sorted({e.lower() for e in settings.production_environments})
    params = {
        "window_days": window_days,
        "repositories": repositories,
        "environments": environments,
        "production_environments": production,
    }

    async def compute() -> DoraReport:
        async with session_scope(sessions) as session:
            return await dora_metrics(
                session,
                window_days=window_days,
                repositories=repositories or None,
                environments=environments or None,
                production_environments=production,
            )

    return _json(await cache.get_or_compute("dora", params, compute))
