"""Runs per UTC day over the last N days, zero-filled."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.db import utcnow
from flightdeck_pipeline.metrics.schemas import HistoryDay
from flightdeck_pipeline.runs.models import RunRollup, RunRollupAll

MIN_DAYS = 1
MAX_DAYS = 90


def history_range(days: int, now: datetime | None = None) -> tuple[list[date], datetime, datetime]:
    """The ``days`` UTC days ending today and their bounds [first midnight, next midnight)."""
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(f"days must be between {MIN_DAYS} and {MAX_DAYS}")
    today = (now or utcnow()).astimezone(UTC).date()
    series = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    since = datetime.combine(series[0], time(), tzinfo=UTC)
    until = datetime.combine(today + timedelta(days=1), time(), tzinfo=UTC)
    return series, since, until


async def run_history(
    session: AsyncSession,
    *,
    days: int,
    repositories: list[str] | None,
    now: datetime | None = None,
    per_repository: bool = False,
) -> list[HistoryDay]:
    """One row per UTC day of the last ``days`` days (1..90) including today, oldest first.

    A run belongs to the UTC day of its ``created_at``; ``total`` counts every run,
    ``successful``/``failed`` those whose display status is success/failed. Days without
    runs are rows of zeros. With ``per_repository`` the rows are per (day, repository),
    for every repository with at least one run in the range (each zero-filled over all
    days), ordered by day then repository.

    Read from the daily rollups only (the range is made of whole UTC days):
    ``run_rollups_all`` for all repositories, else ``run_rollups``, summed in one SQL
    ``GROUP BY`` (day[, repository]); the day list is generated here and left-joined to
    that aggregate to fill the gaps.
    """
    series, _, _ = history_range(days, now)
    model: Any = RunRollup if per_repository or repositories else RunRollupAll
    filters = [model.day >= series[0], model.day <= series[-1], model.total != 0]
    if repositories:
        filters.append(model.repository.in_(repositories))
    keys = [model.day, model.repository] if per_repository else [model.day]
    statement = (
        select(*keys, func.sum(model.total), func.sum(model.success), func.sum(model.failed))
        .where(*filters)
        .group_by(*keys)
    )
    counts: dict[tuple[date, str | None], tuple[int, int, int]] = {}
    for row in await session.execute(statement):
        repository = row[1] if per_repository else None
        total, successful, failed = row[-3:]
        counts[(row[0], repository)] = (int(total), int(successful), int(failed))
    present = sorted({repository for _, repository in counts}, key=lambda r: r or "")
    rows = []
    for current in series:
        for repository in present if per_repository else [None]:
            total, successful, failed = counts.get((current, repository), (0, 0, 0))
            rows.append(
                HistoryDay(
                    day=current,
                    repository=repository,
                    total=total,
                    successful=successful,
                    failed=failed,
                )
            )
    return rows
