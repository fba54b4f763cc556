"""Runs: list, read, logs (viewer); report and move forward (operator)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from flightdeck_common.db import utcnow
from flightdeck_common.errors import InvalidCursor, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from flightdeck_common.params import IdPath, UtcDatetime
from flightdeck_pipeline.dependencies import (
    USER_AUTH_RESPONSES,
    CurrentUser,
    OperatorUser,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
    WriteSessionDep,
)
from flightdeck_pipeline.metrics.cache import RUNS
from flightdeck_pipeline.runs import service
from flightdeck_pipeline.runs.exceptions import IllegalTransition, RunNotFound
from flightdeck_pipeline.runs.models import LogLine
from flightdeck_pipeline.runs.repository import LogQueries, RunQueries
from flightdeck_pipeline.runs.schemas import (
    LOG_LINES_EXAMPLES,
    RUN_STATUS_CHANGE_EXAMPLES,
    RUN_UPSERT_EXAMPLES,
    JobRead,
    LogLevel,
    LogLineRead,
    LogLinesCreate,
    RunDetail,
    RunRead,
    RunStatusChange,
    RunUpsert,
)
from flightdeck_pipeline.runs.status import DisplayStatus

router = APIRouter(prefix="/pipelines", tags=["runs"], responses=USER_AUTH_RESPONSES)

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str | None, Query(max_length=512)]


@router.get(
    "",
    response_model=Page[RunRead],
    summary="List runs",
    responses=problem_responses(InvalidCursor),
)
async def list_pipelines(
    user: CurrentUser,
    session: ReadSessionDep,
    status: DisplayStatus | None = None,
    repository: Annotated[str | None, Query(max_length=200)] = None,
    branch: Annotated[str | None, Query(max_length=255)] = None,
    owner: Annotated[
        str | None, Query(max_length=100, description="Actor who triggered it.")
    ] = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Page[RunRead]:
    """List runs, newest first (filters combine; keyset pagination)."""
    rows, next_cursor = await RunQueries(session).page(
        display_status=status.value if status else None,
        repository=repository,
        branch=branch,
        actor=owner,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    # Validated from dicts: pydantic's fast path (attribute access on rows is slower).
    items = [RunRead.model_validate(row._asdict()) for row in rows]
    return Page[RunRead](items=items, next_cursor=next_cursor)


@router.get(
    "/logs",
    response_model=Page[LogLineRead],
    summary="List recent log lines of all runs",
    responses=problem_responses(InvalidCursor),
)
async def list_recent_logs(
    user: CurrentUser,
    session: ReadSessionDep,
    level: LogLevel | None = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Page[LogLineRead]:
    """Recent log lines across all runs, newest first."""
    rows, next_cursor = await LogQueries(session).recent_logs(
        level=level.value if level else None, limit=limit, cursor=cursor
    )
    return Page[LogLineRead](
        items=[LogLineRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "",
    response_model=RunRead,
    status_code=status.HTTP_201_CREATED,
    summary="Report a run (create or update)",
    responses={200: {"model": RunRead, "description": "An existing run was updated"}},
)
async def upsert_pipeline(
    body: Annotated[RunUpsert, Body(openapi_examples=RUN_UPSERT_EXAMPLES)],
    user: OperatorUser,
    session: WriteSessionDep,
    rt: RuntimeDep,
    response: Response,
) -> RunRead:
    """Report a run from another CI system: created, or updated by (repository, run_id)."""
    run, created = await service.upsert_manual_run(session, rt, body, user)
    if not created:
        response.status_code = status.HTTP_200_OK
    rt.mark_stale(session, RUNS)
    return RunRead.model_validate(run)


@router.get(
    "/{run_pk}",
    response_model=RunDetail,
    summary="Read a run with its jobs",
    responses=problem_responses(RunNotFound),
)
async def read_pipeline(run_pk: IdPath, user: CurrentUser, session: ReadSessionDep) -> RunDetail:
    """One run with its jobs."""
    run = await service.get_run(session, run_pk)
    jobs = await RunQueries(session).jobs_of(run.id)
    return RunDetail(
        **RunRead.model_validate(run).model_dump(), jobs=[JobRead.model_validate(j) for j in jobs]
    )


@router.patch(
    "/{run_pk}",
    response_model=RunRead,
    summary="Move a run forward",
    responses=problem_responses(RunNotFound, IllegalTransition),
)
async def update_pipeline_status(
    run_pk: IdPath,
    body: Annotated[RunStatusChange, Body(openapi_examples=RUN_STATUS_CHANGE_EXAMPLES)],
    user: OperatorUser,
    session: WriteSessionDep,
    rt: RuntimeDep,
) -> RunRead:
    """Move a run forward (queued -> in_progress -> completed); 409 otherwise."""
    run = await service.get_run(session, run_pk)
    updated = await service.change_status(session, rt, run, body, user)
    rt.mark_stale(session, RUNS)
    return RunRead.model_validate(updated)


@router.get(
    "/{run_pk}/logs",
    response_model=Page[LogLineRead],
    summary="List a run's log lines",
    responses=problem_responses(RunNotFound, InvalidCursor),
)
async def list_pipeline_logs(
    run_pk: IdPath,
    user: CurrentUser,
    session: ReadSessionDep,
    limit: Limit = 200,
    cursor: Cursor = None,
) -> Page[LogLineRead]:
    """A run's log lines, oldest first."""
    await service.get_run(session, run_pk)
    rows, next_cursor = await LogQueries(session).logs_of(run_pk, limit=limit, cursor=cursor)
    return Page[LogLineRead](
        items=[LogLineRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/{run_pk}/logs",
    status_code=status.HTTP_201_CREATED,
    response_model=list[LogLineRead],
    summary="Append log lines to a run",
    responses=problem_responses(RunNotFound),
)
async def append_pipeline_logs(
    run_pk: IdPath,
    body: Annotated[LogLinesCreate, Body(openapi_examples=LOG_LINES_EXAMPLES)],
    user: OperatorUser,
    session: SessionDep,
    rt: RuntimeDep,
) -> list[LogLineRead]:
    """Append log lines to a run."""
    await service.get_run(session, run_pk)
    lines = [
        LogLine(
            run_pk=run_pk,
            level=line.level.value,
            message=line.message,
            logged_at=line.logged_at or utcnow(),
        )
        for line in body.lines
    ]
    session.add_all(lines)
    await session.flush()
    await rt.record_change(session, "run.updated", run_pk)
    return [LogLineRead.model_validate(line) for line in lines]
