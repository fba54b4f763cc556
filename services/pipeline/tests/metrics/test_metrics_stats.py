"""Run stats against hand-computed numbers on both backends: exact counts and means, and
percentiles estimated from the duration histogram within the documented bound of the exact
``percentile_cont`` figure (and identical on SQLite and PostgreSQL)."""

from __future__ import annotations

import math
import random

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_pipeline.metrics.stats import run_stats
from flightdeck_pipeline.runs.duration_buckets import RATIO

from .conftest import add_runs, at, make_run, open_database

# Documented bound of a percentile estimate: relative error <= RATIO - 1, plus the
# rounding to the millisecond.
RELATIVE_ERROR = RATIO - 1


def assert_estimate(estimate: float | None, exact: float) -> None:
    assert estimate is not None
    assert abs(estimate - exact) <= RELATIVE_ERROR * exact + 0.0005, (estimate, exact)


@pytest.mark.usefixtures("seeded_runs")
async def test_metrics_stats_all_runs(metrics_sessions: async_sessionmaker[AsyncSession]) -> None:
    async with metrics_sessions() as session:
        stats = await run_stats(session, repositories=None, since=None, until=None)
    # 12 runs: queued w1; running r3; success r1 r4 r5 w3 w4 w5 o1 = 7; failed r2 w2;
    # cancelled r6.
    assert (stats.total, stats.queued, stats.running) == (12, 1, 1)
    assert (stats.successful, stats.failed, stats.cancelled) == (7, 2, 1)
    assert stats.success_rate == 7 / 9  # 7 / (7 + 2)
    # Completed with a duration (w5 has none; r3, w1 not completed), sorted:
    # 10 30 45 60 90 120 300 600 1000 -> n = 9.
    assert stats.durations_counted == 9
    # mean = 2255 / 9 = 250.5555... -> 250.556
    assert stats.avg_duration_seconds == 250.556
    # p50: position 0.5 * 8 = 4 -> v[4] = 90
    assert_estimate(stats.p50_duration_seconds, 90.0)
    # p95: position 0.95 * 8 = 7.6 -> v[7] + 0.6 * (v[8] - v[7]) = 600 + 0.6 * 400 = 840
    assert_estimate(stats.p95_duration_seconds, 840.0)


@pytest.mark.usefixtures("seeded_runs")
async def test_metrics_stats_window_and_repository(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with metrics_sessions() as session:
        stats = await run_stats(
            session, repositories=["acme/api"], since=at(3, 12), until=at(3, 15, 10)
        )
    # acme/api created in [03-12 00:00, 03-15 10:00): r5 (03-12 23:59), r4, r1 (09:00);
    # r2 at 10:00 is excluded (until is exclusive). All three successful.
    assert (stats.total, stats.successful, stats.failed) == (3, 3, 0)
    assert stats.success_rate == 1.0
    assert stats.repositories == ["acme/api"]
    # durations 60 90 300: mean 150; p50 = v[1] = 90; p95: 0.95 * 2 = 1.9 ->
    # 90 + 0.9 * (300 - 90) = 279
    assert stats.durations_counted == 3
    assert stats.avg_duration_seconds == 150.0
    assert_estimate(stats.p50_duration_seconds, 90.0)
    assert_estimate(stats.p95_duration_seconds, 279.0)


@pytest.mark.usefixtures("seeded_runs")
async def test_metrics_stats_two_repositories(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with metrics_sessions() as session:
        stats = await run_stats(
            session, repositories=["acme/web", "acme/old"], since=at(3, 1), until=None
        )
    # Since 03-01: w1..w5 (o1 is in February): queued 1, failed 1 (w2), success 3.
    assert (stats.total, stats.queued, stats.successful, stats.failed) == (5, 1, 3, 1)
    assert stats.success_rate == 0.75  # 3 / (3 + 1)
    # durations 45 600 1000 (w5 none): mean 1645 / 3 = 548.333...; p50 = 600;
    # p95: 0.95 * 2 = 1.9 -> 600 + 0.9 * 400 = 960
    assert stats.avg_duration_seconds == 548.333
    assert_estimate(stats.p50_duration_seconds, 600.0)
    assert_estimate(stats.p95_duration_seconds, 960.0)


@pytest.mark.usefixtures("seeded_runs")
async def test_metrics_stats_without_data(
    metrics_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with metrics_sessions() as session:
        empty = await run_stats(session, repositories=["nobody/here"], since=None, until=None)
        only_pending = await run_stats(
            session, repositories=None, since=at(3, 15, 10, 30), until=at(3, 15, 12)
        )
    assert empty.total == 0
    assert empty.success_rate is None
    assert empty.durations_counted == 0
    assert empty.avg_duration_seconds is None
    assert empty.p50_duration_seconds is None
    assert empty.p95_duration_seconds is None
    # Only r3 (running) in that window: no success nor failure -> no rate.
    assert (only_pending.total, only_pending.running) == (1, 1)
    assert only_pending.success_rate is None
    assert only_pending.p95_duration_seconds is None


def percentile_cont(values: list[float], p: float) -> float:
    """PostgreSQL's definition, for reference."""
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


async def test_metrics_stats_percentile_estimates_identical_on_both_backends(
    sqlite_database_url: str, postgres_database_url: str
) -> None:
    rng = random.Random(20261125)
    sizes = [1, 2, 3, 4, 7, 20, 21, 101]
    populations = {
        f"size/{n}": [round(rng.uniform(0.5, 3600.0), 3) for _ in range(n)] for n in sizes
    }
    answers = []
    for url in (sqlite_database_url, postgres_database_url):
        engine, sessions = await open_database(url)
        try:
            async with sessions.begin() as session:
                await add_runs(
                    session,
                    (
                        make_run(repo, at(3, 1), "success", duration)
                        for repo, durations in populations.items()
                        for duration in durations
                    ),
                )
            async with sessions() as session:
                answers.append(
                    [
                        await run_stats(session, repositories=[repo], since=None, until=None)
                        for repo in populations
                    ]
                )
        finally:
            await engine.dispose()
    sqlite_answers, postgres_answers = answers
    assert sqlite_answers == postgres_answers
    for stats, durations in zip(sqlite_answers, populations.values(), strict=True):
        assert stats.durations_counted == len(durations)
        assert_estimate(stats.p50_duration_seconds, percentile_cont(durations, 0.5))
        assert_estimate(stats.p95_duration_seconds, percentile_cont(durations, 0.95))
