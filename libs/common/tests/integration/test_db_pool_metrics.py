"""``/metrics`` of a service reports its database pool, read at scrape time, on SQLite and
PostgreSQL, and counts the requests that time out waiting for a connection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import QueuePool

from flightdeck_common.db_pool import POOL_CONNECTIONS, POOL_SIZE, POOL_STATES
from flightdeck_common.dependencies import SessionDep
from flightdeck_common.resources import Resources
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import CommonSettings
from flightdeck_common.testing.service_checks import running_app

WAIT_TIMEOUTS = "flightdeck_db_pool_wait_timeouts_total"


class _Settings(CommonSettings):
    service_name = "pooled"
    public_prefix = "/pooled"


@dataclass
class Pooled:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def resources(self) -> Resources:
        resources: Resources = self.app.state.resources
        return resources

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await self.client.get("/metrics")
        assert response.status_code == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    async def pool(self) -> dict[str, float]:
        """``state -> connections`` plus ``size``, as the app's ``/metrics`` reports them."""
        samples = await self.scrape()
        found = {
            dict(labels)["state"]: value
            for (name, labels), value in samples.items()
            if name == POOL_CONNECTIONS
        }
        if (POOL_SIZE, ()) in samples:
            found["size"] = samples[(POOL_SIZE, ())]
        return found


router = APIRouter(prefix="/pooled")


@router.get("/one")
async def read_one(session: SessionDep) -> dict[str, int]:
    """A request that needs a pooled connection."""
    return {"one": int((await session.execute(text("SELECT 1"))).scalar_one())}


def _app(database_url: str, **settings: Any) -> FastAPI:
    return create_service_app(
        _Settings(_env_file=None, database_url=database_url, log_json=False, **settings),
        ServiceSpec(
            title="Pooled", description="Pool metrics test service", version="1", routers=[router]
        ),
    )


@contextlib.asynccontextmanager
async def _running(database_url: str, **settings: Any) -> AsyncIterator[Pooled]:
    app = _app(database_url, **settings)
    async with running_app(app) as client:
        yield Pooled(app, client)


@contextlib.asynccontextmanager
async def _session_in_use(service: Pooled) -> AsyncIterator[AsyncSession]:
    """A session holding its connection (a transaction is open) until the block ends."""
    async with service.resources.sessionmaker() as session:
        await session.execute(text("SELECT 1"))
        yield session


async def test_pool_gauges_follow_open_sessions(database_url: str) -> None:
    async with _running(database_url, database_pool_size=4, database_max_overflow=2) as service:
        pool = service.resources.engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        if not database_url.startswith("sqlite"):
            assert pool.size() == 4  # the settings; SQLite keeps SQLAlchemy's default pool
        before = await service.pool()
        assert before["checked_out"] == 0
        assert before["overflow"] == 0
        assert before["size"] == pool.size()

        async with _session_in_use(service):
            in_use = await service.pool()
            assert in_use["checked_out"] == 1
            async with _session_in_use(service):
                assert (await service.pool())["checked_out"] == 2
            assert (await service.pool())["checked_out"] == 1
        after = await service.pool()

    assert in_use["overflow"] == 0
    assert in_use["checked_out"] + in_use["idle"] <= pool.size()
    assert after["checked_out"] == 0
    assert after["idle"] >= 2  # both connections went back to the pool, still open
    assert after["overflow"] == 0


@pytest.mark.postgres
async def test_overflow_and_wait_timeouts_on_postgres(postgres_database_url: str) -> None:
    async with _running(
        postgres_database_url,
        database_pool_size=1,
        database_max_overflow=1,
        database_pool_timeout_seconds=0.2,
    ) as service:
        timeouts_before = (await service.scrape())[(WAIT_TIMEOUTS, ())]
        async with _session_in_use(service), _session_in_use(service):
            assert await service.pool() == {
                "checked_out": 2,
                "idle": 0,
                "overflow": 1,
                "size": 1,
            }
            with pytest.raises(sa_exc.TimeoutError):
                async with _session_in_use(service):
                    pass
            assert (await service.scrape())[(WAIT_TIMEOUTS, ())] == timeouts_before + 1
            # A request meeting the exhausted pool is a 503, and counted too.
            answer = await service.client.get("/pooled/one")
            assert answer.status_code == 503
            # Readiness has a connection of its own: a busy pool is not a down database.
            assert (await service.client.get("/readyz")).status_code == 200
        assert (await service.scrape())[(WAIT_TIMEOUTS, ())] == timeouts_before + 2
        # The overflow connection is closed when returned; the pool keeps its one.
        assert await service.pool() == {"checked_out": 0, "idle": 1, "overflow": 0, "size": 1}


async def test_every_state_is_exported_once_the_engine_exists(sqlite_database_url: str) -> None:
    app = _app(sqlite_database_url)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        before_lifespan = (await client.get("/metrics")).text
    # Declared (HELP/TYPE) but without samples until the lifespan makes the engine.
    assert f"# TYPE {POOL_CONNECTIONS} gauge" in before_lifespan
    assert f"\n{POOL_CONNECTIONS}{{" not in before_lifespan

    async with running_app(app) as client:
        service = Pooled(app, client)
        assert set(await service.pool()) == {*POOL_STATES, "size"}


async def test_an_in_memory_sqlite_database_reports_no_pool() -> None:
    # StaticPool (one shared connection) has no checked-out/idle counts: left out, no error.
    async with _running("sqlite+aiosqlite://") as service:
        async with _session_in_use(service):
            assert await service.pool() == {}
        samples = await service.scrape()
    assert (WAIT_TIMEOUTS, ()) in samples
