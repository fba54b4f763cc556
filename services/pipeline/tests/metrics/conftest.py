"""Fixtures of the metrics tests: a fresh database on each backend and hand-made data sets.

The data sets are small and written out in full so the expected numbers in the tests can
be computed by hand (the arithmetic is in the tests' comments).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import flightdeck_pipeline.models  # noqa: F401  (every table on the metadata)
from flightdeck_common.db import create_engine, create_sessionmaker
from flightdeck_pipeline.db import Base
from flightdeck_pipeline.deployments.models import Change, Deployment, Incident
from flightdeck_pipeline.metrics.dora import attribute_incident
from flightdeck_pipeline.runs.duration_buckets import duration_bucket
from flightdeck_pipeline.runs.models import Run
from flightdeck_pipeline.runs.rollups import rebuild_rollups
from flightdeck_pipeline.settings import Settings

# "Now" of the hand-computed expectations: Sunday 2026-03-15, noon UTC.
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
PRODUCTION_ENVIRONMENTS = ["production", "prod"]


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


async def open_database(url: str) -> tuple[Any, async_sessionmaker[AsyncSession]]:
    engine = create_engine(Settings(database_url=url, log_json=False))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    return engine, create_sessionmaker(engine)


@pytest.fixture
async def metrics_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh database with every pipeline table (SQLite, then PostgreSQL)."""
    engine, sessions = await open_database(database_url)
    try:
        yield sessions
    finally:
        await engine.dispose()


_run_counter = 0


def make_run(
    repository: str,
    created_at: datetime,
    display_status: str,
    duration_seconds: float | None = None,
) -> Run:
    """A run in the given display status (GitHub status/conclusion consistent with it).

    Written with the ORM, it bypasses the rollups: call :func:`add_runs` (or
    ``rebuild_rollups``) so that stats and history see it."""
    global _run_counter
    _run_counter += 1
    status, conclusion = {
        "queued": ("queued", None),
        "running": ("in_progress", None),
        "success": ("completed", "success"),
        "failed": ("completed", "failure"),
        "cancelled": ("completed", "cancelled"),
    }[display_status]
    return Run(
        repository=repository,
        run_id=_run_counter,
        status=status,
        status_rank={"queued": 0, "in_progress": 1, "completed": 2}[status],
        conclusion=conclusion,
        display_status=display_status,
        duration_seconds=duration_seconds,
        duration_bucket=None if duration_seconds is None else duration_bucket(duration_seconds),
        created_at=created_at,
        updated_at=created_at,
    )


async def add_runs(session: AsyncSession, runs: Iterable[Run]) -> None:
    """Insert runs made by :func:`make_run` and bring the rollups up to date."""
    session.add_all(runs)
    await session.flush()
    await rebuild_rollups(session)


# Runs: (name, repository, created_at, display status, duration seconds).
RUNS: list[tuple[str, str, datetime, str, float | None]] = [
    ("r1", "acme/api", at(3, 15, 9), "success", 60.0),
    ("r2", "acme/api", at(3, 15, 10), "failed", 120.0),
    ("r3", "acme/api", at(3, 15, 11), "running", None),
    ("r4", "acme/api", at(3, 14, 8), "success", 300.0),
    ("r5", "acme/api", at(3, 12, 23, 59), "success", 90.0),
    ("r6", "acme/api", at(3, 10, 0), "cancelled", 30.0),
    ("w1", "acme/web", at(3, 15, 0), "queued", None),
    ("w2", "acme/web", at(3, 14, 12), "failed", 600.0),
    ("w3", "acme/web", at(3, 13, 12), "success", 45.0),
    ("w4", "acme/web", at(3, 1, 12), "success", 1000.0),
    ("w5", "acme/web", at(3, 13, 13), "success", None),  # completed, no duration known
    ("o1", "acme/old", at(2, 1, 12), "success", 10.0),
]


@pytest.fixture
async def seeded_runs(metrics_sessions: async_sessionmaker[AsyncSession]) -> None:
    async with metrics_sessions.begin() as session:
        await add_runs(
            session,
            (make_run(repo, created, status, dur) for _, repo, created, status, dur in RUNS),
        )


@pytest.fixture
async def seeded_dora(metrics_sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Changes, deployments and incidents of two repositories (plus one without deployments).

    Incidents are attributed with ``attribute_incident``; returns name -> primary key.
    """
    changes = {
        # name: (repository, sha, committed_at, authored_at, pushed_at)
        "c0": ("acme/api", "a0", at(2, 1, 0), at(2, 1, 0), at(2, 1, 1)),
        "c1": ("acme/api", "a1", at(3, 1, 8), at(3, 1, 8), at(3, 1, 9)),
        "c2": ("acme/api", "a2", at(3, 1, 10), at(3, 1, 10), at(3, 1, 11)),
        "c3": ("acme/api", "a3", None, at(3, 2, 6), at(3, 2, 7)),
        "c4": ("acme/api", "a4", None, None, at(3, 5, 0)),
        "c5": ("acme/api", "a5", at(3, 10, 0), at(3, 10, 0), at(3, 10, 1)),
        "c6": ("acme/web", "b1", at(3, 14, 10), at(3, 14, 10), at(3, 14, 10, 30)),
    }
    deployments = {
        # name: (repository, environment, production flag, sha, status, succeeded_at, failed_at)
        "d0": ("acme/api", "production", False, "a0", "inactive", at(2, 2), None),
        "d1": ("acme/api", "Production", False, "a2", "inactive", at(3, 1, 12), None),
        "d2": ("acme/api", "prod-eu", True, "a4", "inactive", at(3, 5, 6), None),
        "d3": ("acme/api", "staging", False, "a5", "success", at(3, 10, 2), None),
        "d4": ("acme/api", "production", False, "a4", "failure", None, at(3, 6)),
        "d5": ("acme/api", "production", False, "a2", "error", None, at(2, 1)),
        "d6": ("acme/api", "production", False, "a4", "success", at(3, 8), None),
        "e1": ("acme/web", "production", False, "b1", "success", at(3, 14, 11), None),
        "e2": ("acme/web", "staging", False, "b1", "failure", None, at(3, 14, 9)),
        # Failed first, then succeeded: a successful deployment (of a sha never pushed).
        "e3": ("acme/web", "prod", False, "b0", "inactive", at(3, 12, 11), at(3, 12, 10)),
    }
    incidents = {
        # name: (repository, opened_at, resolved_at)
        "i1": ("acme/api", at(3, 8, 6), at(3, 8, 6, 30)),
        "i2": ("acme/api", at(3, 9, 0), at(3, 9, 4)),
        "i3": ("acme/api", at(3, 11, 0), None),
        "i4": ("acme/web", at(3, 14, 12), at(3, 15, 0)),
        "i5": ("acme/web", at(2, 1, 0), at(2, 1, 1)),
        "i6": ("acme/api", at(3, 1, 6), at(3, 1, 8)),
        "i7": ("acme/cli", at(3, 2, 0), at(3, 4, 0)),
    }
    rows: dict[str, Any] = {}
    async with metrics_sessions.begin() as session:
        for name, (repo, sha, committed, authored, pushed) in changes.items():
            rows[name] = Change(
                repository=repo,
                sha=sha,
                ref="refs/heads/main",
                committed_at=committed,
                authored_at=authored,
                pushed_at=pushed,
            )
        for number, (name, values) in enumerate(deployments.items(), start=1):
            repo, environment, production, sha, status, succeeded, failed = values
            first = min(t for t in (succeeded, failed) if t is not None)
            rows[name] = Deployment(
                repository=repo,
                deployment_id=number,
                environment=environment,
                production=production,
                sha=sha,
                status=status,
                deployed_at=first,
                status_updated_at=first,
                succeeded_at=succeeded,
                failed_at=failed,
                created_at=first,
                updated_at=first,
            )
        for number, (name, (repo, opened, resolved)) in enumerate(incidents.items(), start=1):
            rows[name] = Incident(
                repository=repo,
                issue_number=number,
                title=f"incident {name}",
                opened_at=opened,
                resolved_at=resolved,
            )
        session.add_all(rows.values())
        await session.flush()
        for name in incidents:
            await attribute_incident(
                session, rows[name], production_environments=PRODUCTION_ENVIRONMENTS
            )
        return {name: row.id for name, row in rows.items()}
