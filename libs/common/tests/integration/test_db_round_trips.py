"""Database round trips per request on PostgreSQL: read-only requests run without a
transaction block, and the pool pre-pings only connections that sat idle, while dead
connections are still replaced."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import QueuePool

from flightdeck_common import db_pool
from flightdeck_common.db import create_engine
from flightdeck_common.dependencies import ReadSessionDep, SessionDep
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import CommonSettings
from flightdeck_common.testing.service_checks import running_app


class _Settings(CommonSettings):
    service_name = "trips"
    public_prefix = "/trips"


# now() is the start of the current transaction: the same for every statement of a
# transaction block, later for a statement that is its own transaction.
NOW = sa.select(sa.func.now())
PAUSE = sa.select(sa.func.pg_sleep(0.01))

router = APIRouter(prefix="/trips")


async def _second_statement_is_its_own_transaction(session: AsyncSession) -> bool:
    first = (await session.execute(NOW)).scalar_one()
    await session.execute(PAUSE)
    return bool((await session.execute(NOW)).scalar_one() > first)


@router.get("/read")
async def read_twice(session: ReadSessionDep) -> dict[str, bool]:
    """Statements through a read session."""
    return {"own_transaction": await _second_statement_is_its_own_transaction(session)}


@router.get("/write")
async def write_twice(session: SessionDep) -> dict[str, bool]:
    """Statements through the usual session."""
    return {"own_transaction": await _second_statement_is_its_own_transaction(session)}


@contextlib.asynccontextmanager
async def _service(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_service_app(
        _Settings(_env_file=None, database_url=database_url, log_json=False),
        ServiceSpec(
            title="Trips", description="Round-trip test service", version="1", routers=[router]
        ),
    )
    async with running_app(app) as client:
        yield app, client


async def test_read_sessions_run_outside_a_transaction_block(postgres_database_url: str) -> None:
    async with _service(postgres_database_url) as (_, client):
        for _ in range(3):  # also on connections the pool hands out again
            read = await client.get("/trips/read")
            write = await client.get("/trips/write")
            assert read.status_code == write.status_code == 200
            assert read.json() == {"own_transaction": True}
            assert write.json() == {"own_transaction": False}


async def test_a_read_session_leaves_its_connection_in_transactional_mode(
    postgres_database_url: str,
) -> None:
    """Autocommit is set per checkout: the next session on the same connection gets its
    transaction block again (a writer must never run statement by statement)."""
    async with _service(postgres_database_url) as (app, client):
        engine: AsyncEngine = app.state.resources.engine
        engine.pool.dispose()
        for _ in range(5):
            assert (await client.get("/trips/read")).json() == {"own_transaction": True}
            assert (await client.get("/trips/write")).json() == {"own_transaction": False}
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.checkedin() == 1  # one connection served all of them


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The pre-pings the pool sends (every engine's dialect of this test)."""
    sent: list[Any] = []
    original = PGDialect_asyncpg.do_ping

    def counting_ping(self: Any, dbapi_connection: Any) -> bool:
        sent.append(dbapi_connection)
        return bool(original(self, dbapi_connection))  # type: ignore[no-untyped-call]

    monkeypatch.setattr(PGDialect_asyncpg, "do_ping", counting_ping)
    return sent


@contextlib.asynccontextmanager
async def _engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(_Settings(_env_file=None, database_url=database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(sa.select(sa.func.pg_backend_pid()))).scalar_one())


async def _terminate(killer: AsyncEngine, pids: list[int]) -> None:
    """End these backends and wait until they are gone."""
    async with killer.connect() as connection:
        for pid in pids:
            assert await connection.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
        for _ in range(500):
            alive = await connection.scalar(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": pids},
            )
            if not alive:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"backends {pids} still running")


async def test_a_connection_returned_just_now_is_not_pinged(
    postgres_database_url: str, pings: list[Any]
) -> None:
    async with _engine(postgres_database_url) as engine:
        first = await _backend_pid(engine)
        assert pings == []  # a new connection is not pinged either
        for _ in range(5):
            assert await _backend_pid(engine) == first
        assert pings == []


async def test_a_connection_idle_longer_is_pinged(
    postgres_database_url: str, pings: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_pool, "PING_AFTER_IDLE_SECONDS", 0.0)
    async with _engine(postgres_database_url) as engine:
        first = await _backend_pid(engine)
        assert await _backend_pid(engine) == first
        assert await _backend_pid(engine) == first
        assert len(pings) == 2


async def test_a_connection_that_died_while_idle_is_replaced_before_use(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_pool, "PING_AFTER_IDLE_SECONDS", 0.0)
    async with _engine(postgres_database_url) as engine, _engine(postgres_database_url) as killer:
        victim = await _backend_pid(engine)
        await _terminate(killer, [victim])
        # No failed request: the ping finds the dead connection and the pool opens another.
        assert await _backend_pid(engine) != victim


async def test_a_connection_that_died_just_after_use_fails_once_then_the_pool_recovers(
    postgres_database_url: str,
) -> None:
    """Not pinged (it was used just now): its statement fails as a disconnect, and the pool
    drops every connection opened before, so the next checkout works."""
    async with _engine(postgres_database_url) as engine, _engine(postgres_database_url) as killer:
        async with engine.connect() as a, engine.connect() as b:  # two pooled connections
            victims = [
                int((await c.execute(sa.select(sa.func.pg_backend_pid()))).scalar_one())
                for c in (a, b)
            ]
        await _terminate(killer, victims)
        with pytest.raises(sa.exc.DBAPIError) as excinfo:
            await _backend_pid(engine)
        assert excinfo.value.connection_invalidated
        assert await _backend_pid(engine) not in victims


async def test_readiness_does_not_wait_for_a_busy_pool(postgres_database_url: str) -> None:
    """Every pooled connection checked out by requests: /readyz still answers at once,
    from a connection of its own (the ingress must not take a loaded replica out)."""
    app = create_service_app(
        _Settings(
            _env_file=None,
            database_url=postgres_database_url,
            log_json=False,
            database_pool_size=1,
            database_max_overflow=0,
            database_pool_timeout_seconds=5,
            readiness_timeout_seconds=1,
        ),
        ServiceSpec(title="Trips", description="Round-trip test service", version="1"),
    )
    async with running_app(app) as client:
        engine: AsyncEngine = app.state.resources.engine
        async with engine.connect() as busy:  # the pool's only connection
            await busy.execute(sa.select(1))
            response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["checks"]["database"]["status"] == "ok"
