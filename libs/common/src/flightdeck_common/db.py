"""Async database engine, sessions and the declarative base conventions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.types import TypeDecorator

from flightdeck_common.db_pool import TimeoutCountingQueuePool
from flightdeck_common.settings import CommonSettings

logger = logging.getLogger(__name__)

# Explicit constraint names so migrations are reproducible on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A MetaData with the shared naming convention (one per service)."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(settings: CommonSettings) -> AsyncEngine:
    """Create the service's async engine with pool and timeout settings applied."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, settings)
    return create_async_engine(
        url,
        echo=settings.database_echo,
        poolclass=TimeoutCountingQueuePool,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
        pool_recycle=1800,
        pool_pre_ping=True,
        connect_args=_postgres_connect_args(settings),
    )


def create_probe_engine(settings: CommonSettings) -> AsyncEngine | None:
    """An engine of one connection for the readiness probe (PostgreSQL; None on SQLite).

    The probe keeps its own warm connection, apart from the request pool, so a pool busy
    with requests (every connection checked out, requests queueing) does not make the
    replica look down: the ingress would take it out exactly when it is loaded, and with a
    single replica answer 503 for everything. Whether the database answers is what
    readiness asks. The connection is pre-pinged (it sits idle between probes), so one
    that died with a database restart is replaced within the same probe.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return None
    return create_async_engine(
        url,
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=settings.readiness_timeout_seconds,
        pool_pre_ping=True,
        connect_args=_postgres_connect_args(settings),
    )


def _postgres_connect_args(settings: CommonSettings) -> dict[str, Any]:
    statement_timeout_ms = int(settings.database_statement_timeout_seconds * 1000)
    return {
        "timeout": settings.database_connect_timeout_seconds,
        "command_timeout": settings.database_statement_timeout_seconds + 1,
        "server_settings": {
            "application_name": f"flightdeck-{settings.service_name}",
            "statement_timeout": str(statement_timeout_ms),
            "idle_in_transaction_session_timeout": "60000",
        },
    }


def _create_sqlite_engine(url: URL, settings: CommonSettings) -> AsyncEngine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # The dialect's own rule: file databases get a queue pool, in-memory ones a StaticPool.
    in_memory = not database or database == ":memory:" or url.query.get("mode") == "memory"
    pool_options: dict[str, Any] = {} if in_memory else {"poolclass": TimeoutCountingQueuePool}
    engine = create_async_engine(
        url,
        echo=settings.database_echo,
        connect_args={"timeout": settings.database_statement_timeout_seconds},
        **pool_options,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers proceed during a write; foreign keys are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(
            f"PRAGMA busy_timeout={int(settings.database_statement_timeout_seconds * 1000)}"
        )
        cursor.close()

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read: on PostgreSQL their statements run outside a
    transaction block (autocommit), which saves the ``BEGIN`` and ``COMMIT`` round trips of
    each request. Under READ COMMITTED every statement takes its own snapshot either way,
    so reads see the same data. SQLite keeps the usual sessions: an in-memory database
    shares one connection between sessions, whose mode must not change under a writer.
    """
    if engine.dialect.name == "sqlite":
        return create_sessionmaker(engine)
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


@contextlib.asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commit when the ``async with`` block succeeds, roll back otherwise."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1``; raises when the database cannot be reached."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
