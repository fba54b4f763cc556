"""Run history per UTC day, zero-filled, against hand-computed numbers on both backends."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_pipeline.metrics.history import history_range, run_history
from flightdeck_pipeline.metrics.schemas import HistoryDay

from .conftest import NOW, at


def rows(history: list[HistoryDay]) -> list[tuple[str, str | None, int, int, int]]:
    return [
        (item.day.isoformat(), item.repository, item.total, item.successful, item.failed)
        for item in history
    ]


@pytest.mark.usefixtures("seeded_runs")
async def test_metrics_history_last_week(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with metrics_sessions() as session:
        history = await run_history(session, days=7, repositories=None, now=NOW)
    # 7 days ending today (03-15): 03-09 .. 03-15; w4 (03-01) and o1 (02-01) are older.
    assert rows(history) == [
        ("2026-03-09", None, 0, 0, 0),
        ("2026-03-10", None, 1, 0, 0),  # r6 cancelled
        ("2026-03-11", None, 0, 0, 0),
        ("2026-03-12", None, 1, 1, 0),  # r5 at 23:59 UTC stays on the 12th
        ("2026-03-13", None, 2, 2, 0),  # w3, w5
        ("2026-03-14", None, 2, 1, 1),  # r4 success, w2 failed
        ("2026-03-15", None, 4, 1, 1),  # r1 success, r2 failed, r3 running, w1 queued
    ]


@pytest.mark.usefixtures("seeded_runs")
async def test_metrics_history_one_day_and_filter(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with metrics_sessions() as session:
        today = await run_history(session, days=1, repositories=None, now=NOW)
        web = await run_history(session, days=3, repositories=["acme/web"], now=NOW)
        # Late on the day: still the same single day.
        late = await run_history(session, days=1, repositories=None, now=at(3, 15, 23, 59))
    assert rows(today) == [("2026-03-15", None, 4, 1, 1)]
    assert rows(late) == rows(today)
    assert rows(web) == [
        ("2026-03-13", None, 2, 2, 0),  # w3, w5
        ("2026-03-14", None, 1, 0, 1),  # w2
        ("2026-03-15", None, 1, 0, 0),  # w1 queued
    ]


@pytest.mark.usefixtures("seeded_runs")
async def test_metrics_history_per_repository(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with metrics_sessions() as session:
        history = await run_history(
            session, days=7, repositories=None, now=NOW, per_repository=True
        )
        ninety = await run_history(session, days=90, repositories=None, now=NOW)
    # Repositories with runs in 03-09..03-15: acme/api and acme/web (acme/old only has
    # a February run), each zero-filled over the 7 days: 14 rows.
    assert rows(history) == [
        ("2026-03-09", "acme/api", 0, 0, 0),
        ("2026-03-09", "acme/web", 0, 0, 0),
        ("2026-03-10", "acme/api", 1, 0, 0),  # r6
        ("2026-03-10", "acme/web", 0, 0, 0),
        ("2026-03-11", "acme/api", 0, 0, 0),
        ("2026-03-11", "acme/web", 0, 0, 0),
        ("2026-03-12", "acme/api", 1, 1, 0),  # r5
        ("2026-03-12", "acme/web", 0, 0, 0),
        ("2026-03-13", "acme/api", 0, 0, 0),
        ("2026-03-13", "acme/web", 2, 2, 0),  # w3, w5
        ("2026-03-14", "acme/api", 1, 1, 0),  # r4
        ("2026-03-14", "acme/web", 1, 0, 1),  # w2
        ("2026-03-15", "acme/api", 3, 1, 1),  # r1, r2, r3
        ("2026-03-15", "acme/web", 1, 0, 0),  # w1
    ]
    # 90 days: 2025-12-16 .. 2026-03-15; every run is in range (12 in total).
    assert len(ninety) == 90
    assert ninety[0].day == date(2025, 12, 16)
    assert sum(item.total for item in ninety) == 12
    assert [i.total for i in ninety if i.day in (date(2026, 2, 1), date(2026, 3, 1))] == [1, 1]


@pytest.mark.parametrize("days", [0, 91])
def test_metrics_history_refuses_out_of_range_days(days: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 90"):
        history_range(days, NOW)
