"""Fixtures of the audit log tests: the admin app (in process, or under uvicorn for the
event stream), a migrated database for the chain alone, tokens minted locally, events.

Helpers are fixtures or harness methods (tests never import this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_admin.app import MIGRATIONS_DIR, create_app
from flightdeck_admin.settings import Settings
from flightdeck_common.auth.claims import ADMIN_INTERNAL_AUDIENCE, Role
from flightdeck_common.auth.dependencies import AuthContext, install_auth
from flightdeck_common.auth.testing import TokenMinter
from flightdeck_common.auth.verifier import TokenVerifier
from flightdeck_common.db import create_engine, create_sessionmaker
from flightdeck_common.migrations import upgrade_to_head
from flightdeck_common.resources import Resources
from flightdeck_common.testing.service_checks import bearer, running_app

INGEST_PATH = "/admin/internal/audit-events"
READ_TIMEOUT = 3.0
EventFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def new_event() -> EventFactory:
    """Build an audit event as a service's outbox holds it (JSON-ready dict).

    Occurred times are distinct and increasing (one second apart, from a fixed start).
    """
    counter = itertools.count()
    start = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)

    def make(**overrides: Any) -> dict[str, Any]:
        n = next(counter)
        event: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": "pipeline.run.created",
            "service": "pipeline",
            "actor": "alice",
            "subject": f"run:{n}",
            "occurred_at": (start + timedelta(seconds=n)).isoformat(),
            "ip": "10.0.0.7",
            "request_id": f"req-{n}",
            "data": {"n": n, "nested": {"b": [1, 2.5, None], "a": "é"}},
        }
        event.update(overrides)
        return event

    return make


async def execute_sql(
    sessionmaker: async_sessionmaker[AsyncSession], sql: str, **params: Any
) -> None:
    async with sessionmaker() as session:
        await session.execute(text(sql), params)
        await session.commit()


@dataclass
class AdminApi:
    """The admin app with an in-process client; tokens minted by ``minter``."""

    app: FastAPI
    client: httpx.AsyncClient
    minter: TokenMinter

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        resources: Resources = self.app.state.resources
        return resources.sessionmaker

    def admin_headers(self, role: Role = Role.ADMIN) -> dict[str, str]:
        return bearer(self.minter.user_token(role=role, username=f"{role}-user"))

    def service_headers(
        self, client_id: str = "pipeline", audiences: Sequence[str] = (ADMIN_INTERNAL_AUDIENCE,)
    ) -> dict[str, str]:
        return bearer(self.minter.service_token(client_id, audiences))

    async def ingest(
        self, events: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        # Encoded here (ASCII escapes) so tests can send what httpx would refuse to encode,
        # such as lone surrogates.
        return await self.client.post(
            INGEST_PATH,
            content=json.dumps({"events": events}).encode(),
            headers={
                "Content-Type": "application/json",
                **(self.service_headers() if headers is None else headers),
            },
        )

    async def sql(self, statement: str, **params: Any) -> None:
        """Run SQL directly against the database (as someone tampering with it would)."""
        await execute_sql(self.sessionmaker, statement, **params)


def _install_test_auth(app: FastAPI, minter: TokenMinter) -> None:
    # Tokens minted here instead of fetched from a running auth service.
    install_auth(app, AuthContext(TokenVerifier(minter.key_source(), minter.issuer)))


@pytest.fixture
async def admin_api(database_url: str) -> AsyncIterator[AdminApi]:
    app = create_app(Settings(database_url=database_url, log_json=False))
    minter = TokenMinter()
    async with running_app(app) as client:
        _install_test_auth(app, minter)
        yield AdminApi(app, client, minter)


@pytest.fixture
async def audit_sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A migrated admin database, without the app (for the chain functions alone)."""
    engine = create_engine(Settings(database_url=database_url, log_json=False))
    try:
        await upgrade_to_head(engine, MIGRATIONS_DIR)
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


# --- the event stream: real HTTP (ASGITransport waits for the whole body) ---


@dataclass
class SseMessage:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


class SseReader:
    """Reads an open ``text/event-stream`` response message by message."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next_message(self, within: float = READ_TIMEOUT) -> SseMessage | None:
        """The next message (event, comment or id/retry only); None when the stream ended."""
        async with asyncio.timeout(within):
            message, data, seen = SseMessage(), [], False
            async for line in self._lines:
                if line == "":
                    if seen:
                        message.data = "\n".join(data) if data else None
                        return message
                    continue
                seen = True
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    message.comments.append(value)
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    message.id = value
                elif name == "event":
                    message.event = value
                elif name == "retry":
                    message.retry = int(value)
            return None

    async def next_event(self, within: float = READ_TIMEOUT) -> SseMessage:
        """The next message with data (comments and id/retry-only messages are skipped)."""
        async with asyncio.timeout(within):
            while True:
                message = await self.next_message(within)
                assert message is not None, "the stream ended"
                if message.data is not None:
                    return message


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # leave pytest's signal handlers alone


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan included) on a free loopback port; yield its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class LiveAdmin(AdminApi):
    """An admin replica under uvicorn (its client speaks real HTTP)."""

    @contextlib.asynccontextmanager
    async def stream(
        self,
        *,
        last_event_id: int | str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[SseReader]:
        sent = {**self.admin_headers(), **(headers or {})}
        if last_event_id is not None:
            sent["Last-Event-ID"] = str(last_event_id)
        async with self.client.stream(
            "GET", "/admin/audit-events/stream", params=params, headers=sent
        ) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            yield SseReader(response)


LiveAdminFactory = Callable[[str], Any]


@pytest.fixture
async def live_admin_factory() -> AsyncIterator[LiveAdminFactory]:
    """Start admin replicas under uvicorn (one token issuer for all); stopped at the end."""
    minter = TokenMinter()
    async with contextlib.AsyncExitStack() as stack:

        async def start(database_url: str) -> LiveAdmin:
            app = create_app(Settings(database_url=database_url, log_json=False))
            base_url = await stack.enter_async_context(serve(app))
            _install_test_auth(app, minter)
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10.0))
            )
            return LiveAdmin(app, client, minter)

        yield start
