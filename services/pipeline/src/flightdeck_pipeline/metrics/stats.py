"""Run statistics over a time window, aggregated in SQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from flightdeck_pipeline.metrics.schemas import RunStats
from flightdeck_pipeline.metrics.sql import round_or_none, summarize
from flightdeck_pipeline.runs.models import Run
from flightdeck_pipeline.runs.status import DisplayStatus, RunStatus

# Durations are reported with millisecond precision (identical on every backend).
SECONDS_DIGITS = 3


def run_filters(
    repositories: list[str] | None, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """``created_at`` in ``[since, until)`` and the repository filter (None/empty = all)."""
    filters: list[ColumnElement[bool]] = []
    if repositories:
        filters.append(Run.repository.in_(repositories))
    if since is not None:
        filters.append(Run.created_at >= since)
    if until is not None:
        filters.append(Run.created_at < until)
    return filters


async def run_stats(
    session: AsyncSession,
    *,
    repositories: list[str] | None,
    since: datetime | None,
    until: datetime | None,
) -> RunStats:
    """Counts, success rate and duration figures of the runs created in ``[since, until)``.

    - counts: all runs, and per display status (queued, running, success, failed,
      cancelled);
    - success_rate = success / (success + failed), None when both are 0 (cancelled,
      queued and running runs are left out);
    - duration figures over completed runs (``status = completed``, whatever their
      conclusion) that have a ``duration_seconds``: mean, p50 and p95, the percentiles
      interpolated like ``percentile_cont`` (see :func:`summarize`), in seconds rounded
      to the millisecond.

    Two queries, both aggregates: one for the counts, one for the durations.
    """
    filters = run_filters(repositories, since, until)
    by_status = {
        status: func.count().filter(Run.display_status == status.value).label(status.value)
        for status in DisplayStatus
    }
    counts = (
        await session.execute(
            select(func.count().label("total"), *by_status.values()).where(*filters)
        )
    ).one()
    durations = select(Run.duration_seconds).where(
        *filters, Run.status == RunStatus.COMPLETED.value, Run.duration_seconds.is_not(None)
    )
    summary = await summarize(session, durations, (0.5, 0.95))
    mapping = counts._mapping
    successful = int(mapping[DisplayStatus.SUCCESS.value])
    failed = int(mapping[DisplayStatus.FAILED.value])
    return RunStats(
        since=since,
        until=until,
        repositories=sorted(set(repositories or [])),
        total=int(mapping["total"]),
        queued=int(mapping[DisplayStatus.QUEUED.value]),
        running=int(mapping[DisplayStatus.RUNNING.value]),
        successful=successful,
        failed=failed,
        cancelled=int(mapping[DisplayStatus.CANCELLED.value]),
        success_rate=successful / (successful + failed) if successful + failed else None,
        durations_counted=summary.count,
        avg_duration_seconds=round_or_none(summary.mean, SECONDS_DIGITS),
        p50_duration_seconds=round_or_none(summary.percentiles[0], SECONDS_DIGITS),
        p95_duration_seconds=round_or_none(summary.percentiles[1], SECONDS_DIGITS),
    )
