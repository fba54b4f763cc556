"""The outbox relay lifespan hook: a service with it delivers what it enqueues to the
admin ingest route with its service token, flushes on shutdown, and without credentials
keeps its events (and says so) instead of failing to start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import func, select
from sqlalchemy.orm import DeclarativeBase

from flightdeck_common.db import session_scope
from flightdeck_common.outbox import Auditor, OutboxEventMixin
from flightdeck_common.outbox_lifespan import (
    ADMIN_TRANSPORT_KEY,
    AUDIT_INGEST_PATH,
    admin_http_sender,
    outbox_relay_lifespan,
)
from flightdeck_common.resources import Resources
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import CommonSettings
from flightdeck_common.testing.service_checks import running_app


class Base(DeclarativeBase):
    pass


class Outbox(OutboxEventMixin, Base):
    __tablename__ = "outbox"


audit = Auditor(Outbox, "relayed")


class _Settings(CommonSettings):
    service_name = "relayed"
    public_prefix = "/relayed"


class StaticTokens:
    def __init__(self) -> None:
        self.invalidated = 0

    async def token(self) -> str:
        return "static-token"

    def invalidate(self) -> None:
        self.invalidated += 1


def _receiver(received: list[tuple[str, list[dict[str, Any]]]]) -> FastAPI:
    """A stand-in for admin's ingest route that records what arrives."""
    receiver = FastAPI()

    @receiver.post(AUDIT_INGEST_PATH)
    async def ingest(request: Request) -> dict[str, int]:
        body = await request.json()
        received.append((request.headers["authorization"], body["events"]))
        return {"accepted": len(body["events"]), "duplicates": 0}

    return receiver


def _service(
    tmp_path: Path,
    received: list[tuple[str, list[dict[str, Any]]]] | None,
    tokens: StaticTokens | None = None,
    **settings: Any,
) -> FastAPI:
    router = APIRouter(prefix="/relayed")

    @router.post("/things")
    async def make_thing(request: Request) -> dict[str, str]:
        resources: Resources = request.app.state.resources
        async with session_scope(resources.sessionmaker) as session:
            await audit(session, "thing.made", actor="tester", subject="thing-1")
        return {"ok": "yes"}

    @contextlib.asynccontextmanager
    async def tables(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
        async with resources.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        if received is not None:
            resources.extras[ADMIN_TRANSPORT_KEY] = httpx.ASGITransport(app=_receiver(received))
        yield

    hook = outbox_relay_lifespan(Outbox, admin_http_sender(lambda app, res, http: tokens))
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/relayed.db",
        "admin_url": "http://admin",
        "outbox_interval_seconds": 0.05,
        "log_json": False,
    }
    config = _Settings(**(values | settings))
    spec = ServiceSpec(
        title="t", description="t", version="0", routers=[router], lifespan_hooks=[tables, hook]
    )
    return create_service_app(config, spec)


async def _pending(app: FastAPI) -> int:
    async with app.state.resources.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Outbox).where(Outbox.delivered_at.is_(None))
        )
    return int(count or 0)


async def test_events_reach_the_ingest_route_with_the_token(tmp_path: Path) -> None:
    received: list[tuple[str, list[dict[str, Any]]]] = []
    app = _service(tmp_path, received, StaticTokens())
    async with running_app(app) as client:
        assert app.state.outbox_relay is not None
        assert (await client.post("/relayed/things")).status_code == 200
        for _ in range(200):
            if received and await _pending(app) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _pending(app) == 0
    assert len(received) == 1
    authorization, events = received[0]
    assert authorization == "Bearer static-token"
    assert [(e["type"], e["service"], e["actor"]) for e in events] == [
        ("relayed.thing.made", "relayed", "tester")
    ]


async def test_shutdown_flushes_what_is_pending(tmp_path: Path) -> None:
    received: list[tuple[str, list[dict[str, Any]]]] = []
    app = _service(tmp_path, received, StaticTokens(), outbox_interval_seconds=60)
    async with running_app(app) as client:
        await asyncio.sleep(0.3)  # past the relay's first (empty) cycle: it now sleeps 60 s
        for _ in range(3):
            assert (await client.post("/relayed/things")).status_code == 200
        assert await _pending(app) == 3
    assert sum(len(events) for _, events in received) == 3


@pytest.mark.parametrize("enabled", [True, False], ids=["no-credentials", "disabled"])
async def test_without_a_relay_events_stay(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], enabled: bool
) -> None:
    app = _service(tmp_path, None, None, outbox_relay_enabled=enabled)
    async with running_app(app) as client:
        assert app.state.outbox_relay is None
        assert (await client.post("/relayed/things")).status_code == 200
        assert await _pending(app) == 1
    # The service's log handler writes to the process's stdout.
    warned = "audit events stay in its outbox" in capfd.readouterr().out
    assert warned is enabled
