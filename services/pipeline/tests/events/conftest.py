"""Fixtures of the live events tests: pipeline apps served by a real uvicorn on a free port.

httpx's ASGITransport collects the whole response before returning it, so it cannot read a
stream that never ends: the apps run under ``uvicorn.Server`` in a task of the test's event
loop, and clients talk real HTTP to them. Tables come from ``Base.metadata.create_all``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import flightdeck_pipeline.models  # noqa: F401 - every table on Base.metadata
from flightdeck_common.auth.claims import Role
from flightdeck_common.auth.dependencies import AuthContext, install_auth
from flightdeck_common.auth.revocation import RevocationChecker
from flightdeck_common.auth.testing import TokenMinter
from flightdeck_common.auth.verifier import TokenVerifier
from flightdeck_common.resources import Resources
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.testing.live import READ_TIMEOUT, SseReader, serve
from flightdeck_pipeline.db import Base
from flightdeck_pipeline.events.bus import ChangeBus
from flightdeck_pipeline.events.lifespan import make_events_lifespan
from flightdeck_pipeline.events.publish import record_change
from flightdeck_pipeline.events.repository import ChangeEventRepository
from flightdeck_pipeline.events.router import router
from flightdeck_pipeline.settings import Settings


@dataclass
class LiveApp:
    """One pipeline replica: its app, URL and a client; writes go through its own bus."""

    app: FastAPI
    base_url: str
    server: uvicorn.Server
    client: httpx.AsyncClient
    minter: TokenMinter
    settings: Settings

    @property
    def bus(self) -> ChangeBus:
        bus: ChangeBus = self.app.state.change_bus
        return bus

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        resources: Resources = self.app.state.resources
        return resources.sessionmaker

    async def wait_for_no_requests(self, within: float = READ_TIMEOUT) -> None:
        """Wait until the server has no request in flight (every stream has ended)."""
        async with asyncio.timeout(within):
            while True:
                if not self.server.server_state.tasks:
                    return
                await asyncio.sleep(0.02)

    def headers(self, *, role: Role = Role.VIEWER, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.minter.user_token(role=role, **claims)}"}

    async def record(self, kind: str, payload: dict[str, Any]) -> int:
        """Record a change in a committed transaction of this replica (like a route would);
        return its id (the newest: tests write one change at a time)."""
        async with self.sessionmaker() as session:
            await record_change(session, self.bus, kind, payload)
            await session.commit()
        async with self.sessionmaker() as session:
            return await ChangeEventRepository.from_session(session).latest_id()

    @contextlib.asynccontextmanager
    async def stream(
        self,
        *,
        last_event_id: int | str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[SseReader]:
        sent = {**self.headers(), **(headers or {})}
        if last_event_id is not None:
            sent["Last-Event-ID"] = str(last_event_id)
        async with self.client.stream(
            "GET", "/pipelines/events", params=params, headers=sent
        ) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            yield SseReader(response)


LiveAppFactory = Callable[..., Awaitable[LiveApp]]


@dataclass(frozen=True)
class Backend:
    database_url: str
    redis_url: str | None


@pytest.fixture(params=["sqlite+local", "postgresql+redis"])
def events_backend(request: pytest.FixtureRequest) -> Backend:
    """SQLite with the in-process bus, or PostgreSQL with the Redis bus."""
    if request.param == "sqlite+local":
        return Backend(request.getfixturevalue("sqlite_database_url"), None)
    return Backend(
        request.getfixturevalue("postgres_database_url"), request.getfixturevalue("redis_url")
    )


@pytest.fixture
def token_minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture
async def live_app_factory(token_minter: TokenMinter) -> AsyncIterator[LiveAppFactory]:
    """Start pipeline replicas (events router only) under uvicorn; all stopped at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            database_url: str,
            redis_url: str | None = None,
            *,
            poll_interval: float = 1.0,
            revocations: RevocationChecker | None = None,
            **settings: Any,
        ) -> LiveApp:
            config = Settings(
                database_url=database_url,
                redis_url=redis_url,
                log_json=False,
                sse_heartbeat_seconds=settings.pop("sse_heartbeat_seconds", 0.2),
                **settings,
            )

            @contextlib.asynccontextmanager
            async def tables_and_auth(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
                async with resources.engine.begin() as connection:
                    await connection.run_sync(Base.metadata.create_all)
                verifier = TokenVerifier(
                    token_minter.key_source(), token_minter.issuer, revocations=revocations
                )
                install_auth(app, AuthContext(verifier))
                yield

            app = create_service_app(
                config,
                ServiceSpec(
                    title="Flightdeck Pipelines (events test)",
                    description="The live events router alone.",
                    version="0.0.0-test",
                    routers=[router],
                    lifespan_hooks=[
                        tables_and_auth,
                        make_events_lifespan(poll_interval=poll_interval),
                    ],
                ),
            )
            base_url, server = await stack.enter_async_context(serve(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10.0))
            )
            return LiveApp(app, base_url, server, client, token_minter, config)

        yield start


@pytest.fixture
def bus_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the change bus logger (the apps replace the root handlers, so caplog
    does not see them)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    bus_logger = logging.getLogger("flightdeck_pipeline.events.bus")
    bus_logger.addHandler(handler)
    try:
        yield records
    finally:
        bus_logger.removeHandler(handler)
