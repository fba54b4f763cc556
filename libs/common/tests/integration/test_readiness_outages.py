"""/readyz follows real PostgreSQL and Redis outages and recovers without a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from flightdeck_common.dependencies import SessionDep
from flightdeck_common.devstack.ports import free_port
from flightdeck_common.devstack.postgres import PostgresServer
from flightdeck_common.devstack.redis import RedisServer
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import CommonSettings
from flightdeck_common.testing.plugin import throwaway_postgres


class _Settings(CommonSettings):
    service_name = "outage"
    public_prefix = "/outage"


router = APIRouter(prefix="/outage")


@router.get("/count")
async def count_rows(session: SessionDep) -> dict[str, int]:
    """Touch the database."""
    value = (await session.execute(text("SELECT 1"))).scalar_one()
    return {"value": int(value)}


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    # Its own server: this module stops it, which must not disturb other tests.
    with throwaway_postgres(["app"]) as server:
        yield server


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-outage"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(
    own_postgres: PostgresServer, own_redis: RedisServer, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    own_postgres.ensure_running()
    own_redis.ensure_running()
    settings = _Settings(
        database_url=own_postgres.url("app"),
        redis_url=own_redis.url,
        readiness_timeout_seconds=1.5,
        database_connect_timeout_seconds=1.0,
        log_json=False,
    )
    app: FastAPI = create_service_app(
        settings, ServiceSpec(title="t", description="t", version="0", routers=[router])
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
            yield http


async def test_postgres_down_means_not_ready_then_recovers(
    client: httpx.AsyncClient, own_postgres: PostgresServer
) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["status"] == "ok"

    own_postgres.stop()
    try:
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        body = down.json()
        assert body["code"] == "not_ready"
        assert "database" in body["detail"]
        assert body["checks"]["database"]["status"] == "down"
        # A request that needs the database gets a 503 problem, not a 500 or a hang.
        query = await client.get("/outage/count")
        assert query.status_code == 503
        assert query.headers["content-type"] == "application/problem+json"
        assert (await client.get("/healthz")).status_code == 200  # liveness is unaffected
    finally:
        own_postgres.start()

    again = await client.get("/readyz")
    assert again.status_code == 200
    assert (await client.get("/outage/count")).json() == {"value": 1}


async def test_redis_down_is_degraded_not_down(
    client: httpx.AsyncClient, own_redis: RedisServer
) -> None:
    assert (await client.get("/readyz")).json()["status"] == "ready"
    own_redis.stop()
    try:
        response = await client.get("/readyz")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "degraded"
        assert body["checks"]["redis"]["status"] == "down"
        assert body["checks"]["redis"]["critical"] is False
    finally:
        own_redis.start()
    assert (await client.get("/readyz")).json()["status"] == "ready"
