"""``record_change``: the row is written in the caller's transaction and the bus hears of it
only after that transaction commits (SQLAlchemy's after_commit, on aiosqlite and asyncpg)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

import flightdeck_pipeline.models  # noqa: F401 - every table on Base.metadata
from flightdeck_common.db import create_engine, create_sessionmaker
from flightdeck_pipeline.db import Base
from flightdeck_pipeline.events.bus import ChangeBus
from flightdeck_pipeline.events.models import ChangeEvent
from flightdeck_pipeline.events.publish import (
    DEPLOYMENT_UPDATED,
    RUN_UPDATED,
    check_kind,
    record_change,
)
from flightdeck_pipeline.events.repository import append_changes
from flightdeck_pipeline.settings import Settings

pytestmark = pytest.mark.timeout(30)


class RecordingBus(ChangeBus):
    """A bus that remembers what it was told (and on which thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.notified: list[int | None] = []

    def notify(self, change_id: int | None = None) -> None:
        self.notified.append(change_id)
        self._wake(change_id)


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(Settings(database_url=database_url, log_json=False))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def settle() -> None:
    """Let callbacks scheduled with call_soon run."""
    for _ in range(3):
        await asyncio.sleep(0)


class Colour(StrEnum):
    GREEN = "green"


async def stored(sessionmaker: async_sessionmaker[AsyncSession]) -> list[tuple[int, str, Any]]:
    async with sessionmaker() as session:
        rows = (await session.scalars(select(ChangeEvent).order_by(ChangeEvent.id))).all()
    return [(row.id, row.kind, json.loads(row.payload)) for row in rows]


async def test_change_is_written_and_announced_by_the_commit(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    bus = RecordingBus()
    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    async with sessionmaker() as session:
        await record_change(
            session,
            bus,
            RUN_UPDATED,
            {"at": at, "uuid": UUID(int=7), "colour": Colour.GREEN, "text": "a\nb"},
        )
        await record_change(session, bus, DEPLOYMENT_UPDATED, {"n": 2})
        await settle()
        assert bus.notified == []  # not before the commit
        assert await stored(sessionmaker) == []
        await session.commit()
        await settle()

    rows = await stored(sessionmaker)
    assert [(kind, data) for _, kind, data in rows] == [
        (
            RUN_UPDATED,
            {
                "at": "2026-11-25T12:00:00Z",
                "uuid": "00000000-0000-0000-0000-000000000007",
                "colour": "green",
                "text": "a\nb",
            },
        ),
        (DEPLOYMENT_UPDATED, {"n": 2}),
    ]
    assert rows[0][0] < rows[1][0]  # in the order recorded
    assert bus.notified == [rows[1][0]]  # once per commit, with the highest id

    # One session, several transactions; without a bus the change is only stored.
    async with sessionmaker() as session:
        await session.commit()  # nothing recorded in this one
        await record_change(session, bus, RUN_UPDATED, {"n": 3})
        await session.commit()
        await record_change(session, None, RUN_UPDATED, {"n": 4})
        await session.commit()
        await settle()
    rows = await stored(sessionmaker)
    assert [data.get("n") for _, _, data in rows[2:]] == [3, 4]
    assert bus.notified == [rows[1][0], rows[2][0]]


async def test_rollbacks_and_rolled_back_savepoints_record_nothing(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    bus = RecordingBus()
    async with sessionmaker() as session:
        await record_change(session, bus, RUN_UPDATED, {"n": 1})
        await session.rollback()
        await settle()
        assert bus.notified == []

        async with session.begin():
            await record_change(session, bus, RUN_UPDATED, {"n": 2})
            async with session.begin_nested() as savepoint:
                await record_change(session, bus, RUN_UPDATED, {"n": 3})
                async with session.begin_nested():
                    await record_change(session, bus, RUN_UPDATED, {"n": 4})
                await savepoint.rollback()
            async with session.begin_nested():
                await record_change(session, bus, RUN_UPDATED, {"n": 5})
            await settle()
            assert bus.notified == []  # releasing a savepoint is not the commit
        await settle()

        async def failing_request() -> None:
            async with session.begin():
                await record_change(session, bus, RUN_UPDATED, {"n": 6})
                raise RuntimeError("the request failed")

        with pytest.raises(RuntimeError):
            await failing_request()
        await settle()

    rows = await stored(sessionmaker)
    assert [data["n"] for _, _, data in rows] == [2, 5]
    assert bus.notified == [rows[-1][0]]


async def test_commit_with_a_savepoint_left_open_is_reported(
    sqlite_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLAlchemy runs the commit hook before closing a savepoint left open: what was
    recorded cannot be written then. Not silent."""
    engine = create_engine(Settings(database_url=sqlite_database_url, log_json=False))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessionmaker = create_sessionmaker(engine)
    caplog.set_level(logging.ERROR, "flightdeck_pipeline.events.publish")
    try:
        async with sessionmaker() as session, session.begin():
            await session.begin_nested()  # never closed
            await record_change(session, None, RUN_UPDATED, {"n": 1})
        assert any("still open at commit" in r.getMessage() for r in caplog.records)
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "kind", ["", "run", "Run.updated", "run.updated\nevent: x", "run..updated", "a." + "b" * 31]
)
def test_invalid_kinds_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="invalid change kind"):
        check_kind(kind)


async def test_postgres_writers_only_wait_for_each_other_while_committing(
    postgres_database_url: str,
) -> None:
    """Recording takes no lock: a transaction still at work after recording a change does
    not hold up other writers. Writing the events (at commit) takes the ordering lock: a
    second writer waits until the first one committed, so ids follow commit order."""
    engine = create_engine(Settings(database_url=postgres_database_url, log_json=False))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with sessionmaker() as slow, sessionmaker() as fast:
            await record_change(slow, None, RUN_UPDATED, {"n": "slow"})
            await record_change(fast, None, RUN_UPDATED, {"n": "fast"})
            await asyncio.wait_for(fast.commit(), 2)
            await slow.commit()
        assert [data["n"] for _, _, data in await stored(sessionmaker)] == ["fast", "slow"]

        def append(session: Session) -> list[int]:
            return append_changes(session, [(RUN_UPDATED, "{}")])

        async with sessionmaker() as first, sessionmaker() as second:
            [first_id] = await first.run_sync(append)
            waiting = asyncio.create_task(second.run_sync(append))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # until the first writer commits
            await first.commit()
            [second_id] = await asyncio.wait_for(waiting, 2)
            await second.commit()
        assert second_id > first_id
    finally:
        await engine.dispose()


async def test_postgres_writer_draws_its_id_only_once_it_holds_the_ordering_lock(
    postgres_database_url: str,
) -> None:
    """The ordering lock and the first insert are one statement: the id (nextval) must be
    drawn after the lock is held, or a writer that waited could commit an id lower than
    one already committed. A value drawn from the sequence while the second writer waits
    is therefore lower than the second writer's id."""
    engine = create_engine(Settings(database_url=postgres_database_url, log_json=False))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessionmaker = create_sessionmaker(engine)

    def append(session: Session) -> list[int]:
        return append_changes(session, [(RUN_UPDATED, "{}"), (RUN_UPDATED, "{}")])

    try:
        async with sessionmaker() as first, sessionmaker() as second, sessionmaker() as other:
            first_ids = await first.run_sync(append)
            waiting = asyncio.create_task(second.run_sync(append))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # waits for the lock
            drawn_meanwhile = await other.scalar(select(func.nextval("change_events_id_seq")))
            await other.commit()
            await first.commit()
            second_ids = await asyncio.wait_for(waiting, 2)
            await second.commit()
        assert first_ids == sorted(first_ids)
        assert second_ids == sorted(second_ids)
        assert max(first_ids) < drawn_meanwhile < min(second_ids)
    finally:
        await engine.dispose()
