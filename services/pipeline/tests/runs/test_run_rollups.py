"""Daily run rollups: kept exact by every write path (webhooks, redelivered and out of
order; the manual run API; concurrent writers on PostgreSQL), filled by the migration, and
read by stats (whole days) next to the runs of partial days."""

# ruff: noqa: S608  (SQL built from generated float literals)

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Select, func, insert, select, text
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import flightdeck_pipeline.models  # noqa: F401  (every table on the metadata)
from flightdeck_common.auth.claims import Role
from flightdeck_common.db import create_engine, create_sessionmaker
from flightdeck_common.migrations import alembic_config
from flightdeck_pipeline.app import MIGRATIONS_DIR
from flightdeck_pipeline.db import Base
from flightdeck_pipeline.events.publish import record_change
from flightdeck_pipeline.metrics.history import run_history
from flightdeck_pipeline.metrics.sql import summarize, utc_day
from flightdeck_pipeline.metrics.stats import run_filters, run_stats, split_window
from flightdeck_pipeline.runs.duration_buckets import (
    BOUNDS,
    OVERFLOW_BUCKET,
    RATIO,
    duration_bucket,
    duration_bucket_sql,
)
from flightdeck_pipeline.runs.models import Run, RunRollupAll
from flightdeck_pipeline.runs.repository import RunRepository
from flightdeck_pipeline.runs.rollups import check_rollups, rebuild_rollups
from flightdeck_pipeline.runs.status import Conclusion, DisplayStatus, RunStatus
from flightdeck_pipeline.runs.updates import JobUpdate, RunUpdate
from flightdeck_pipeline.settings import Settings

from ..conftest import FIXTURES, PipelineHarness

DAY0 = datetime(2026, 3, 10, tzinfo=UTC)
CONCLUSIONS = ["success", "failure", "cancelled", "timed_out", "neutral", "skipped"]


def _fixture(event: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / event / name).read_text())
    return loaded


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _sessions(url: str) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    engine = create_engine(Settings(database_url=url, log_json=False))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    return engine, create_sessionmaker(engine)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine, made = await _sessions(database_url)
    try:
        yield made
    finally:
        await engine.dispose()


async def assert_consistent(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        differences = await check_rollups(session)
    assert differences.total == 0, differences.tables


# -- buckets ---------------------------------------------------------------------------


def test_duration_buckets_are_log_scale_with_a_bounded_ratio() -> None:
    assert BOUNDS[0] == 0.0
    assert BOUNDS[1] == 0.001
    ratios = [upper / lower for lower, upper in itertools.pairwise(BOUNDS[1:])]
    assert max(ratios) <= RATIO * (1 + 1e-8)
    assert BOUNDS[OVERFLOW_BUCKET] >= 40 * 86_400
    assert duration_bucket(0.0) == 0
    assert duration_bucket(0.0009) == 0
    assert duration_bucket(0.001) == 1
    assert duration_bucket(10**9) == OVERFLOW_BUCKET
    for bucket in (1, 100, OVERFLOW_BUCKET - 1):
        assert duration_bucket(BOUNDS[bucket]) == bucket
        assert duration_bucket(BOUNDS[bucket + 1]) == bucket + 1


async def test_duration_bucket_sql_agrees_with_python(database_url: str) -> None:
    rng = random.Random(5)
    values = [0.0, 0.0004, 0.001, 1.0, 59.999, 60.0, 3600.0, 10.0**8, *BOUNDS]
    values += [rng.lognormvariate(4, 2.5) for _ in range(300)]
    values += [round(rng.uniform(0, 5000), 3) for _ in range(300)]
    engine, sessions = await _sessions(database_url)
    try:
        async with sessions() as session:
            # One statement: the values as a VALUES list, bucketed by the SQL tree.
            rows = ", ".join(f"({index}, {value!r})" for index, value in enumerate(values))
            dialect = session.get_bind().dialect.name
            source = (
                f"(VALUES {rows}) AS v(i, d)"
                if dialect == "postgresql"
                else f"(SELECT column1 AS i, column2 AS d FROM (VALUES {rows}))"
            )
            result = await session.execute(
                text(
                    f"SELECT i, {duration_bucket_sql('CAST(d AS DOUBLE PRECISION)', dialect)} FROM {source} ORDER BY i"
                )
            )
            buckets = [bucket for _, bucket in result]
    finally:
        await engine.dispose()
    assert buckets == [duration_bucket(value) for value in values]


# -- webhooks and the manual API ---------------------------------------------------------


def _run_lifecycle(rng: random.Random, repository: str, run_id: int, created: datetime) -> list:
    """Deliveries of one run: requested, in progress, completed; sometimes a second
    attempt; sometimes a job event that comes first and makes a placeholder run."""
    template = _fixture("workflow_run", "completed.payload.json")
    deliveries: list[tuple[str, dict[str, Any]]] = []
    clock = created
    attempts = 2 if rng.random() < 0.3 else 1
    for attempt in range(1, attempts + 1):
        started = clock + timedelta(seconds=rng.randint(1, 60))
        finished = started + timedelta(seconds=rng.choice([0, 1, 7, 45, 300, 1800, 7200]))
        for status, updated in (
            ("requested", clock),
            ("in_progress", started),
            ("completed", finished),
        ):
            payload = copy.deepcopy(template)
            payload["action"] = status
            payload["repository"]["full_name"] = repository
            run = payload["workflow_run"]
            run.update(
                id=run_id,
                run_attempt=attempt,
                status=status,
                conclusion=rng.choice(CONCLUSIONS) if status == "completed" else None,
                created_at=_iso(created),
                updated_at=_iso(updated),
                run_started_at=_iso(started),
            )
            deliveries.append(("workflow_run", payload))
        clock = finished + timedelta(seconds=5)
    if rng.random() < 0.5:
        job = _fixture("workflow_job", "queued.payload.json")
        job["repository"]["full_name"] = repository
        job["workflow_job"].update(id=run_id * 10, run_id=run_id, created_at=_iso(created))
        deliveries.append(("workflow_job", job))
    return deliveries


async def _rollup_totals(pipeline: PipelineHarness) -> tuple[int, ...]:
    async with pipeline.app.state.resources.sessionmaker() as session:
        row = (
            await session.execute(
                select(func.sum(RunRollupAll.total), func.sum(RunRollupAll.durations))
            )
        ).one()
    return tuple(int(value or 0) for value in row)


async def test_rollups_follow_webhooks_and_manual_runs(pipeline: PipelineHarness) -> None:
    rng = random.Random(8)
    deliveries: list[tuple[str, str, dict[str, Any]]] = []
    for index in range(14):
        repository = ["acme/api", "acme/web", "acme/cli"][index % 3]
        created = DAY0 + timedelta(days=index % 4, hours=rng.randint(0, 23), minutes=index)
        for number, (event, payload) in enumerate(
            _run_lifecycle(rng, repository, 5000 + index, created)
        ):
            deliveries.append((f"rollup-{index}-{number}", event, payload))
    # Out of order, and a third of them delivered twice.
    sends = deliveries + rng.sample(deliveries, len(deliveries) // 3)
    rng.shuffle(sends)
    for start in range(0, len(sends), 4):
        responses = await asyncio.gather(
            *(
                pipeline.deliver(event, payload, delivery_id=delivery_id)
                for delivery_id, event, payload in sends[start : start + 4]
            )
        )
        assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses]
    await assert_consistent(pipeline.app.state.resources.sessionmaker)

    # A redelivery changes nothing, not even a zero row.
    before = await _rollup_totals(pipeline)
    delivery_id, event, payload = sends[0]
    again = await pipeline.deliver(event, payload, delivery_id=delivery_id)
    assert again.status_code == 200
    assert again.json()["result"] == "duplicate"
    assert await _rollup_totals(pipeline) == before

    # The manual API: create, report again, move forward, complete.
    operator = pipeline.headers(Role.OPERATOR)
    created_pks = []
    for run_id in range(1, 6):
        body = {"repository": "ci/other", "run_id": run_id, "status": "queued"}
        response = await pipeline.client.post("/pipelines", json=body, headers=operator)
        assert response.status_code in (200, 201), response.text
        created_pks.append(response.json()["id"])
    await pipeline.client.post(
        "/pipelines",
        json={
            "repository": "ci/other",
            "run_id": 1,
            "status": "completed",
            "conclusion": "failure",
            "started_at": "2026-03-12T10:00:00Z",
            "completed_at": "2026-03-12T10:04:30.250Z",
        },
        headers=operator,
    )
    for pk in created_pks[1:3]:
        moved = await pipeline.client.patch(
            f"/pipelines/{pk}", json={"status": "in_progress"}, headers=operator
        )
        assert moved.status_code == 200, moved.text
    done = await pipeline.client.patch(
        f"/pipelines/{created_pks[1]}",
        json={"status": "completed", "conclusion": "success"},
        headers=operator,
    )
    assert done.status_code == 200, done.text
    await assert_consistent(pipeline.app.state.resources.sessionmaker)

    # Stats from the rollups agree with the runs table.
    async with pipeline.app.state.resources.sessionmaker() as session:
        stats = await run_stats(session, repositories=None, since=None, until=None)
        runs = await session.scalar(select(func.count()).select_from(Run))
        failed = await session.scalar(
            select(func.count()).where(Run.display_status == DisplayStatus.FAILED.value)
        )
    assert (stats.total, stats.failed) == (runs, failed)


# -- concurrent writers --------------------------------------------------------------------


def _update(rng: random.Random, repository: str, run_id: int, created: datetime) -> RunUpdate:
    status = rng.choice(list(RunStatus))
    attempt = rng.choice([1, 1, 1, 2])
    started = created + timedelta(seconds=rng.randint(0, 30)) if status != "queued" else None
    completed = None
    conclusion = None
    if status is RunStatus.COMPLETED:
        completed = (started or created) + timedelta(seconds=rng.uniform(0, 4000))
        conclusion = Conclusion(rng.choice(CONCLUSIONS))
    return RunUpdate(
        repository=repository,
        run_id=run_id,
        run_attempt=attempt,
        status=status,
        conclusion=conclusion,
        source_updated_at=created + timedelta(seconds=rng.randint(0, 5000)),
        started_at=started,
        completed_at=completed,
        created_at=created,
    )


async def test_concurrent_writers_keep_rollups_exact(postgres_database_url: str) -> None:
    engine, sessions = await _sessions(postgres_database_url)
    rng = random.Random(11)
    runs = [
        (rng.choice(["acme/api", "acme/web"]), run_id, DAY0 + timedelta(hours=rng.randint(0, 47)))
        for run_id in range(1, 13)
    ]

    async def writer(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(30):
            repository, run_id, created = local.choice(runs)
            async with sessions.begin() as session:
                repo = RunRepository(session)
                if local.random() < 0.2:
                    job = JobUpdate(
                        repository=repository,
                        run_id=run_id,
                        job_id=run_id,
                        run_attempt=1,
                        name="build",
                        status=RunStatus.QUEUED,
                        conclusion=None,
                        runner_name=None,
                        steps_count=0,
                        started_at=None,
                        completed_at=None,
                        html_url=None,
                        head_sha=None,
                        branch=None,
                        workflow_name=None,
                        source_updated_at=created,
                    )
                    await repo.ensure_placeholder(job)
                else:
                    await repo.upsert(_update(local, repository, run_id, created))

    try:
        await asyncio.gather(*(writer(seed) for seed in range(8)))
        await assert_consistent(sessions)
        async with sessions() as session:
            total = await session.scalar(select(func.sum(RunRollupAll.total)))
            runs_stored = await session.scalar(select(func.count()).select_from(Run))
        assert total == runs_stored
    finally:
        await engine.dispose()


async def test_rollups_are_written_as_the_transaction_commits(database_url: str) -> None:
    """A transaction's rollup differences are summed and written at its commit, before the
    change events (whose ordering lock must be the last lock taken); a rollback, or the
    rollback of the savepoint a run was written in, leaves the rollups as they were."""
    engine, sessions = await _sessions(database_url)
    statements: list[str] = []

    def remember(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa_event.listen(engine.sync_engine, "before_cursor_execute", remember)
    rng = random.Random(5)
    try:
        async with sessions() as session:
            # The change event is recorded first: its hook still comes second.
            await record_change(session, None, "run.updated", {"n": 1})
            repo = RunRepository(session)
            await repo.upsert(_update(rng, "acme/api", 1, DAY0))
            await repo.upsert(_update(rng, "acme/api", 1, DAY0))  # same run, same transaction
            await repo.upsert(_update(rng, "acme/web", 2, DAY0 + timedelta(days=1)))
            assert not [s for s in statements if "run_rollups" in s]  # staged, not written
            await session.commit()
        rollups = [i for i, s in enumerate(statements) if "run_rollups" in s]
        events = [i for i, s in enumerate(statements) if "INTO change_events" in s]
        assert rollups
        assert events
        assert max(rollups) < min(events)
        await assert_consistent(sessions)

        async with sessions() as session:
            await RunRepository(session).upsert(_update(rng, "acme/api", 3, DAY0))
            await session.rollback()
        async with sessions() as session:
            repo = RunRepository(session)
            await repo.upsert(_update(rng, "acme/api", 4, DAY0))
            savepoint = await session.begin_nested()
            await repo.upsert(_update(rng, "acme/api", 5, DAY0))
            await savepoint.rollback()
            async with session.begin_nested():
                await repo.upsert(_update(rng, "acme/web", 6, DAY0))
            await session.commit()
        await assert_consistent(sessions)
        async with sessions() as session:
            total = await session.scalar(select(func.sum(RunRollupAll.total)))
            stored = set(await session.scalars(select(Run.run_id)))
        assert stored == {1, 2, 4, 6}
        assert total == 4
    finally:
        await engine.dispose()


# -- rebuild and check -----------------------------------------------------------------


async def test_check_finds_drift_and_rebuild_repairs_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    rng = random.Random(3)
    async with sessions.begin() as session:
        repo = RunRepository(session)
        for run_id in range(1, 21):
            created = DAY0 + timedelta(hours=rng.randint(0, 72))
            await repo.upsert(_update(rng, "acme/api", run_id, created))
    await assert_consistent(sessions)
    async with sessions.begin() as session:
        await session.execute(RunRollupAll.__table__.update().values(total=RunRollupAll.total + 1))
        drift = await check_rollups(session)
    assert drift.tables["run_rollups_all"] > 0
    async with sessions.begin() as session:
        rebuilt = await rebuild_rollups(session)
    assert rebuilt.tables["run_rollups_all"] > 0
    await assert_consistent(sessions)


# -- stats: whole days from rollups, edges from runs -----------------------------------


async def _exact_stats(
    session: AsyncSession,
    repositories: list[str] | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[dict[str, int], float | None, float | None, float | None]:
    """The definition, straight on ``runs`` (the former implementation)."""
    filters = run_filters(repositories, since, until)
    counted = [Run.status == "completed", Run.duration_seconds.is_not(None)]
    counts = {
        status.value: int(
            await session.scalar(
                select(func.count()).where(*filters, Run.display_status == status.value)
            )
            or 0
        )
        for status in DisplayStatus
    }
    counts["total"] = sum(counts.values())
    durations: Select[Any] = select(Run.duration_seconds).where(*filters, *counted)
    summary = await summarize(session, durations, (0.5, 0.95))
    counts["durations"] = summary.count
    return counts, summary.mean, summary.percentiles[0], summary.percentiles[1]


async def test_stats_match_the_runs_for_windows_with_partial_days(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    rng = random.Random(20261126)
    repositories = ["acme/api", "acme/web", "acme/cli"]
    async with sessions.begin() as session:
        repo = RunRepository(session)
        for run_id in range(1, 401):
            created = DAY0 + timedelta(seconds=rng.randint(0, 6 * 86_400))
            update = _update(rng, rng.choice(repositories), run_id, created)
            await repo.upsert(update)
    windows: list[tuple[datetime | None, datetime | None]] = [
        (None, None),
        (DAY0 + timedelta(days=1), DAY0 + timedelta(days=4)),  # whole days only
        (DAY0 + timedelta(days=1, hours=7, minutes=13), None),  # partial head
        (None, DAY0 + timedelta(days=3, hours=17, seconds=1)),  # partial tail
        (DAY0 + timedelta(hours=5), DAY0 + timedelta(days=5, hours=2)),  # both edges
        (DAY0 + timedelta(days=2, hours=3), DAY0 + timedelta(days=2, hours=20)),  # one day
        (DAY0 + timedelta(days=2, hours=20), DAY0 + timedelta(days=3, hours=4)),  # two halves
    ]
    async with sessions() as session:
        for since, until in windows:
            for chosen in (None, ["acme/web"], ["acme/api", "acme/cli"]):
                stats = await run_stats(session, repositories=chosen, since=since, until=until)
                counts, mean, p50, p95 = await _exact_stats(session, chosen, since, until)
                window = (since, until, chosen)
                assert stats.total == counts["total"], window
                assert (stats.queued, stats.running) == (counts["queued"], counts["running"])
                assert (stats.successful, stats.failed, stats.cancelled) == (
                    counts["success"],
                    counts["failed"],
                    counts["cancelled"],
                ), window
                assert stats.durations_counted == counts["durations"], window
                assert mean is not None
                assert p50 is not None
                assert p95 is not None
                assert stats.avg_duration_seconds == pytest.approx(round(mean, 3), abs=0.0011)
                for estimate, exact in (
                    (stats.p50_duration_seconds, p50),
                    (stats.p95_duration_seconds, p95),
                ):
                    assert estimate is not None
                    assert abs(estimate - exact) <= (RATIO - 1) * exact + 0.0005, window


def test_split_window_edges() -> None:
    noon = DAY0 + timedelta(hours=12)
    split = split_window(noon, DAY0 + timedelta(days=3))
    assert (split.first_day, split.end_day) == (
        (DAY0 + timedelta(days=1)).date(),
        (DAY0 + timedelta(days=3)).date(),
    )
    assert split.partial == ((noon, DAY0 + timedelta(days=1)),)
    inside = split_window(noon, noon + timedelta(hours=3))
    assert not inside.whole_days
    assert inside.partial == ((noon, noon + timedelta(hours=3)),)
    aligned = split_window(DAY0, DAY0 + timedelta(days=1))
    assert aligned.whole_days
    assert aligned.partial == ()


async def test_history_reads_the_rollups_like_the_runs(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    rng = random.Random(4)
    now = DAY0 + timedelta(days=6, hours=10)
    async with sessions.begin() as session:
        repo = RunRepository(session)
        for run_id in range(1, 151):
            created = DAY0 + timedelta(seconds=rng.randint(0, 6 * 86_400 + 36_000))
            await repo.upsert(_update(rng, rng.choice(["a/x", "a/y"]), run_id, created))
    async with sessions() as session:
        dialect = session.get_bind().dialect.name
        day = utc_day(Run.created_at, dialect)
        for per_repository in (False, True):
            for chosen in (None, ["a/y"]):
                rows = await run_history(
                    session, days=5, repositories=chosen, now=now, per_repository=per_repository
                )
                keys = [day, Run.repository] if per_repository else [day]
                since = datetime.combine(rows[0].day, datetime.min.time(), tzinfo=UTC)
                expected_rows = await session.execute(
                    select(
                        *keys,
                        func.count(),
                        func.count().filter(Run.display_status == "success"),
                        func.count().filter(Run.display_status == "failed"),
                    )
                    .where(*run_filters(chosen, since, None))
                    .group_by(*keys)
                )
                expected = {
                    (row[0], row[1] if per_repository else None): tuple(row[-3:])
                    for row in expected_rows
                }
                got = {
                    (item.day.isoformat(), item.repository): (
                        item.total,
                        item.successful,
                        item.failed,
                    )
                    for item in rows
                    if item.total
                }
                assert got == expected


# -- the migration's backfill ----------------------------------------------------------


def _upgrade(connection: Connection, url: str, target: str) -> None:
    config = alembic_config(MIGRATIONS_DIR, url)
    config.attributes["connection"] = connection
    command.upgrade(config, target)


async def test_migration_backfills_buckets_and_rollups(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url, log_json=False))
    url = engine.url.render_as_string(hide_password=False)
    rng = random.Random(9)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, url, "pipeline_0002")
            # Runs as the previous revision stored them (no duration_bucket column yet).
            columns = [c for c in Run.__table__.c if c.name not in ("id", "duration_bucket")]
            rows = []
            for run_id in range(1, 121):
                status = rng.choice(["queued", "in_progress", "completed", "completed"])
                display = {"queued": "queued", "in_progress": "running"}.get(
                    status, rng.choice(["success", "failed", "cancelled"])
                )
                created = DAY0 + timedelta(seconds=rng.randint(0, 3 * 86_400))
                duration = (
                    round(rng.lognormvariate(4, 2), 3)
                    if status == "completed" and rng.random() < 0.9
                    else None
                )
                rows.append(
                    {
                        "repository": rng.choice(["acme/api", "acme/web"]),
                        "run_id": run_id,
                        "run_attempt": 1,
                        "status": status,
                        "status_rank": {"queued": 0, "in_progress": 1, "completed": 2}[status],
                        "display_status": display,
                        "duration_seconds": duration,
                        "source": "github",
                        "created_at": created,
                        "updated_at": created,
                    }
                )
            table = Run.__table__
            statement = insert(table).values(
                [{c.name: row.get(c.name) for c in columns} for row in rows]
            )
            await connection.execute(statement)
            await connection.run_sync(_upgrade, url, "head")
        sessions = create_sessionmaker(engine)
        await assert_consistent(sessions)
        async with sessions() as session:
            stored = (
                await session.execute(select(Run.duration_seconds, Run.duration_bucket))
            ).all()
            total = await session.scalar(select(func.sum(RunRollupAll.total)))
        assert total == len(rows)
        for duration, bucket in stored:
            assert bucket == (None if duration is None else duration_bucket(duration))
    finally:
        await engine.dispose()
