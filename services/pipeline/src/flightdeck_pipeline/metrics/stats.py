"""Run statistics over a time window, from the daily rollups plus the runs of partial days."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, literal_column, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from flightdeck_pipeline.metrics.schemas import RunStats
from flightdeck_pipeline.metrics.sql import dialect_of, round_or_none
from flightdeck_pipeline.runs.duration_buckets import bucket_range
from flightdeck_pipeline.runs.models import (
    Run,
    RunDurationRollup,
    RunDurationRollupAll,
    RunRollup,
    RunRollupAll,
)
from flightdeck_pipeline.runs.rollups import COUNT_COLUMNS, run_buckets, run_counts
from flightdeck_pipeline.runs.status import DisplayStatus

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


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True)
class WindowSplit:
    """``[since, until)`` as whole UTC days (read from the rollups) and partial days at
    the edges (read from ``runs``, through the ``created_at`` indexes)."""

    whole_days: bool  # False: the window lies inside one or two partial days only
    first_day: date | None  # first whole day (None: unbounded)
    end_day: date | None  # first day after the whole days (None: unbounded)
    partial: tuple[tuple[datetime, datetime], ...]


def split_window(since: datetime | None, until: datetime | None) -> WindowSplit:
    first_day: date | None = None
    end_day: date | None = None
    head = tail = None
    if since is not None:
        since = since.astimezone(UTC)
        first_day = since.date()
        if since != _midnight(first_day):
            first_day += timedelta(days=1)
            head = (since, _midnight(first_day))
    if until is not None:
        until = until.astimezone(UTC)
        end_day = until.date()
        if until != _midnight(end_day):
            tail = (_midnight(end_day), until)
    no_whole_day = first_day is not None and end_day is not None and first_day >= end_day
    if since is not None and until is not None and no_whole_day:
        # Inside one day, or the two partial halves of consecutive days: all from runs.
        return WindowSplit(False, None, None, ((since, until),) if since < until else ())
    partial = tuple(edge for edge in (head, tail) if edge is not None)
    return WindowSplit(True, first_day, end_day, partial)


def _rollup_filters(
    model: Any, repositories: list[str] | None, split: WindowSplit
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if repositories:
        filters.append(model.repository.in_(repositories))
    if split.first_day is not None:
        filters.append(model.day >= split.first_day)
    if split.end_day is not None:
        filters.append(model.day < split.end_day)
    return filters


def _partial_filters(
    repositories: list[str] | None, split: WindowSplit
) -> list[ColumnElement[bool]]:
    ranges = [(Run.created_at >= start) & (Run.created_at < end) for start, end in split.partial]
    return [*run_filters(repositories, None, None), or_(*ranges)]


def estimate_percentile(histogram: Sequence[tuple[int, int]], p: float) -> float | None:
    """``percentile_cont(p)`` estimated from (bucket, count) pairs in bucket order.

    Position p * (n - 1) as in ``percentile_cont``; each of the two order statistics it
    falls between is estimated inside its bucket ``[lower, upper)``, the k-th of the c
    values of a bucket at ``lower + (k + 0.5) / c * (upper - lower)``; then the same
    linear interpolation. Every estimate lies in the bucket of the value it stands for,
    hence a relative error of at most (ratio - 1) = 5 % (see metrics/README.md).
    """
    n = sum(count for _, count in histogram)
    if n == 0:
        return None
    position = p * (n - 1)
    low = math.floor(position)
    fraction = position - low
    low_value = _order_statistic(histogram, low)
    if fraction == 0:
        return low_value
    high_value = _order_statistic(histogram, low + 1)
    return low_value + fraction * (high_value - low_value)


def _order_statistic(histogram: Sequence[tuple[int, int]], rank: int) -> float:
    before = 0
    for bucket, count in histogram:
        if rank < before + count:
            lower, upper = bucket_range(bucket)
            return lower + (rank - before + 0.5) / count * (upper - lower)
        before += count
    raise ValueError(f"rank {rank} beyond the histogram ({before} values)")


async def run_stats(
    session: AsyncSession,
    *,
    repositories: list[str] | None,
    since: datetime | None,
    until: datetime | None,
) -> RunStats:
    """Counts, success rate and duration figures of the runs created in ``[since, until)``.

    - counts: all runs, and per display status (queued, running, success, failed,
      cancelled) — exact;
    - success_rate = success / (success + failed), None when both are 0 (cancelled,
      queued and running runs are left out);
    - duration figures over completed runs (``status = completed``, whatever their
      conclusion) that have a ``duration_seconds``: the mean, exact (sum / count, the sum
      kept in microseconds), and p50/p95 estimated from the duration histogram
      (:func:`estimate_percentile`, within 5 % of ``percentile_cont``), in seconds
      rounded to the millisecond.

    Whole UTC days of the window come from the rollups (``run_rollups_all`` without a
    repository filter, else ``run_rollups``), the partial days at its edges from ``runs``
    (bounded by the ``created_at`` indexes). Two queries: the counters and the histogram,
    each a ``UNION ALL`` of both sources summed in SQL.
    """
    dialect = dialect_of(session)
    split = split_window(since, until)
    if repositories:
        counts_model: Any = RunRollup
        buckets_model: Any = RunDurationRollup
    else:
        counts_model, buckets_model = RunRollupAll, RunDurationRollupAll
    count_parts: list[Select[Any]] = []
    bucket_parts: list[Select[Any]] = []
    if split.whole_days:
        filters = _rollup_filters(counts_model, repositories, split)
        count_parts.append(
            select(
                *(func.sum(getattr(counts_model, name)).label(name) for name in COUNT_COLUMNS)
            ).where(*filters)
        )
        bucket_filters = _rollup_filters(buckets_model, repositories, split)
        bucket_parts.append(
            select(buckets_model.bucket.label("bucket"), buckets_model.runs.label("runs")).where(
                *bucket_filters
            )
        )
    if split.partial:
        partial = _partial_filters(repositories, split)
        count_parts.append(run_counts(dialect, [], *partial))
        bucket_parts.append(run_buckets(dialect, [], *partial))
    mapping = dict.fromkeys(COUNT_COLUMNS, 0)
    histogram: list[tuple[int, int]] = []
    if count_parts:
        counts = union_all(*count_parts).subquery("counts")
        row = (
            await session.execute(
                select(*(func.coalesce(func.sum(counts.c[name]), 0) for name in COUNT_COLUMNS))
            )
        ).one()
        mapping = {name: int(value) for name, value in zip(COUNT_COLUMNS, row, strict=True)}
        buckets = union_all(*bucket_parts).subquery("buckets")
        total_runs = func.sum(buckets.c.runs)
        rows = await session.execute(
            select(buckets.c.bucket, total_runs)
            .group_by(buckets.c.bucket)
            .having(total_runs > literal_column("0"))
            .order_by(buckets.c.bucket)
        )
        histogram = [(int(bucket), int(runs)) for bucket, runs in rows]
    successful = mapping[DisplayStatus.SUCCESS.value]
    failed = mapping[DisplayStatus.FAILED.value]
    durations = mapping["durations"]
    mean = mapping["duration_sum_us"] / durations / 1_000_000 if durations else None
    return RunStats(
        since=since,
        until=until,
        repositories=sorted(set(repositories or [])),
        total=mapping["total"],
        queued=mapping[DisplayStatus.QUEUED.value],
        running=mapping[DisplayStatus.RUNNING.value],
        successful=successful,
        failed=failed,
        cancelled=mapping[DisplayStatus.CANCELLED.value],
        success_rate=successful / (successful + failed) if successful + failed else None,
        durations_counted=durations,
        avg_duration_seconds=round_or_none(mean, SECONDS_DIGITS),
        p50_duration_seconds=round_or_none(estimate_percentile(histogram, 0.5), SECONDS_DIGITS),
        p95_duration_seconds=round_or_none(estimate_percentile(histogram, 0.95), SECONDS_DIGITS),
    )
