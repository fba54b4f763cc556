"""Database helpers: engines, sessions, UTC datetimes and the naming convention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateIndex, CreateTable

from flightdeck_common.db import (
    TimestampMixin,
    UTCDateTime,
    create_engine,
    create_sessionmaker,
    is_sqlite,
    new_metadata,
    ping,
    session_scope,
)


class Base(DeclarativeBase):
    metadata = new_metadata()


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(primary_key=True)


class Event(TimestampMixin, Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(20), unique=True)
    name: Mapped[str] = mapped_column(sa.String(50), index=True)
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("owners.id"))
    happened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


@pytest.fixture
async def engine(make_settings: Any) -> Any:
    engine = create_engine(make_settings())
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


# --- engines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///var/auth.db", True),
        ("sqlite+aiosqlite:///:memory:", True),
        ("postgresql+asyncpg://u:p@db/auth", False),
    ],
)
def test_is_sqlite(url: str, expected: bool) -> None:
    assert is_sqlite(url) is expected
    assert is_sqlite(sa.make_url(url)) is expected


async def test_sqlite_engine_creates_the_parent_directory(
    make_settings: Any, tmp_path: Path
) -> None:
    database = tmp_path / "nested" / "var" / "test.db"
    engine = create_engine(make_settings(database_url=f"sqlite+aiosqlite:///{database}"))
    try:
        assert database.parent.is_dir()
        await ping(engine)
        assert database.exists()
    finally:
        await engine.dispose()


async def test_sqlite_connections_get_the_pragmas(make_settings: Any) -> None:
    engine = create_engine(make_settings(database_statement_timeout_seconds=3))
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("foreign_keys", "journal_mode", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {"foreign_keys": 1, "journal_mode": "wal", "busy_timeout": 3000}


async def add_in_transaction(engine: AsyncEngine, instance: Base) -> None:
    async with session_scope(create_sessionmaker(engine)) as session:
        session.add(instance)


async def test_foreign_keys_are_enforced_on_sqlite(engine: AsyncEngine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        await add_in_transaction(engine, Event(id=1, code="c", name="n", owner_id=999))


def test_postgres_engine_uses_the_pool_settings(make_settings: Any) -> None:
    settings = make_settings(
        database_url="postgresql+asyncpg://u:p@127.0.0.1:1/x",
        database_pool_size=7,
        database_max_overflow=3,
        database_pool_timeout_seconds=2.5,
    )
    engine = create_engine(settings)  # does not connect
    assert engine.dialect.name == "postgresql"
    assert engine.pool.size() == 7
    assert engine.pool.timeout() == 2.5


async def test_ping_succeeds_on_sqlite(engine: AsyncEngine) -> None:
    await ping(engine)


async def test_ping_raises_when_the_database_is_unreachable(make_settings: Any) -> None:
    engine = create_engine(
        make_settings(
            database_url="postgresql+asyncpg://u:p@127.0.0.1:1/x",
            database_connect_timeout_seconds=1,
        )
    )
    try:
        with pytest.raises(OSError):  # noqa: PT011 - refused or unreachable, depending on host
            await ping(engine)
    finally:
        await engine.dispose()


# --- sessions --------------------------------------------------------------------------------


async def count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(sa.select(sa.func.count(Event.id)))).scalar_one())


async def test_session_scope_commits_when_the_block_succeeds(engine: AsyncEngine) -> None:
    async with session_scope(create_sessionmaker(engine)) as session:
        session.add(Event(id=1, code="a", name="first"))
    assert await count_events(engine) == 1


async def test_session_scope_rolls_back_when_the_block_fails(engine: AsyncEngine) -> None:
    with pytest.raises(LookupError):  # noqa: PT012 (the raise must happen inside the scope)
        async with session_scope(create_sessionmaker(engine)) as session:
            session.add(Event(id=1, code="a", name="first"))
            await session.flush()
            raise LookupError("boom")
    assert await count_events(engine) == 0


async def test_returning_from_the_block_still_commits(engine: AsyncEngine) -> None:
    async def create() -> int:
        async with session_scope(create_sessionmaker(engine)) as session:
            session.add(Event(id=1, code="a", name="first"))
            return 1

    assert await create() == 1
    assert await count_events(engine) == 1


async def test_sessions_do_not_expire_objects_on_commit(engine: AsyncEngine) -> None:
    async with session_scope(create_sessionmaker(engine)) as session:
        event = Event(id=1, code="a", name="first")
        session.add(event)
    # Reading attributes after the commit must not trigger (forbidden) lazy IO.
    assert event.name == "first"
    assert event.created_at.tzinfo is UTC


# --- UTC datetimes -----------------------------------------------------------------------------


async def test_aware_datetimes_come_back_as_utc(engine: AsyncEngine) -> None:
    local = datetime(2026, 6, 1, 10, 30, 15, 250000, tzinfo=timezone(timedelta(hours=2)))
    sessionmaker = create_sessionmaker(engine)
    async with session_scope(sessionmaker) as session:
        session.add(Event(id=1, code="a", name="n", happened_at=local))
    async with session_scope(sessionmaker) as session:
        stored = await session.scalar(sa.select(Event.happened_at))
    assert stored == local
    assert stored is not None
    assert stored.tzinfo is UTC
    assert stored.hour == 8


async def test_comparisons_use_the_instant_not_the_wall_clock(engine: AsyncEngine) -> None:
    plus_two = timezone(timedelta(hours=2))
    sessionmaker = create_sessionmaker(engine)
    async with session_scope(sessionmaker) as session:
        session.add(
            Event(id=1, code="a", name="n", happened_at=datetime(2026, 6, 1, 10, tzinfo=plus_two))
        )
        session.add(
            Event(id=2, code="b", name="n", happened_at=datetime(2026, 6, 1, 9, tzinfo=UTC))
        )
    async with session_scope(sessionmaker) as session:
        cutoff = datetime(2026, 6, 1, 8, 30, tzinfo=UTC)
        before = (
            await session.scalars(sa.select(Event.id).where(Event.happened_at < cutoff))
        ).all()
    assert before == [1]


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    naive = Event(id=1, code="a", name="n", happened_at=datetime(2026, 1, 1))
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        await add_in_transaction(engine, naive)


async def test_null_datetimes_stay_null(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    async with session_scope(sessionmaker) as session:
        session.add(Event(id=1, code="a", name="n", happened_at=None))
    async with session_scope(sessionmaker) as session:
        assert await session.scalar(sa.select(Event.happened_at)) is None


def test_utc_datetime_python_type() -> None:
    assert UTCDateTime().python_type is datetime


async def test_timestamps_are_set_and_updated(engine: AsyncEngine) -> None:
    sessionmaker = create_sessionmaker(engine)
    before = datetime.now(UTC)
    async with session_scope(sessionmaker) as session:
        session.add(Event(id=1, code="a", name="n"))
    async with session_scope(sessionmaker) as session:
        event = await session.get(Event, 1)
        assert event is not None
        assert event.created_at.tzinfo is UTC
        assert before - timedelta(seconds=1) <= event.created_at <= datetime.now(UTC)
        assert event.updated_at == event.created_at or event.updated_at >= event.created_at
        created = event.created_at
        event.name = "renamed"
    async with session_scope(sessionmaker) as session:
        event = await session.get(Event, 1)
        assert event is not None
        assert event.created_at == created
        assert event.updated_at > created


# --- naming convention --------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()])
def test_constraint_names_follow_the_convention(dialect: Any) -> None:
    ddl = str(CreateTable(Event.__table__).compile(dialect=dialect))
    assert "CONSTRAINT pk_events PRIMARY KEY" in ddl
    assert "CONSTRAINT uq_events_code UNIQUE" in ddl
    assert "CONSTRAINT fk_events_owner_id_owners FOREIGN KEY" in ddl
    [index] = Event.__table__.indexes
    assert "CREATE INDEX ix_events_name" in str(CreateIndex(index).compile(dialect=dialect))


def test_each_metadata_is_independent() -> None:
    first, second = new_metadata(), new_metadata()
    assert first is not second
    assert first.naming_convention == second.naming_convention
