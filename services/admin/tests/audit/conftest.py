"""Fixtures of the audit log tests: the admin app (in process, or under uvicorn for the
event stream), a migrated database for the chain alone, tokens minted locally, events.

Helpers are fixtures or harness methods (tests never import this module).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_admin.app import MIGRATIONS_DIR, create_app
from flightdeck_admin.settings import Settings
from flightdeck_common.auth.claims import ADMIN_INTERNAL_AUDIENCE, Role
from flightdeck_common.auth.dependencies import AuthContext, install_auth
from flightdeck_common.auth.revocation import RevocationChecker
from flightdeck_common.auth.testing import TokenMinter
from flightdeck_common.auth.verifier import TokenVerifier
from flightdeck_common.db import create_engine, create_sessionmaker
from flightdeck_common.migrations import upgrade_to_head
from flightdeck_common.resources import Resources
from flightdeck_common.testing.live import SseReader, serve
from flightdeck_common.testing.service_checks import bearer, running_app

INGEST_PATH = "/admin/internal/audit-events"
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
        # such as lone surrogates. Without headers: a token of the events' own service (an
        # account submits its own service's events only), sent one run of a service at a time.
        if headers is None and not events:
            headers = self.service_headers()
        if headers is None:
            response: httpx.Response | None = None
            for service, run in itertools.groupby(events, key=lambda e: e.get("service")):
                batch = list(run)
                client_id = service if isinstance(service, str) and service else "pipeline"
                response = await self.ingest(batch, self.service_headers(client_id))
                if response.status_code != 200:
                    return response
            assert response is not None
            return response
        return await self.client.post(
            INGEST_PATH,
            content=json.dumps({"events": events}).encode(),
            headers={"Content-Type": "application/json", **headers},
        )

    async def sql(self, statement: str, **params: Any) -> None:
        """Run SQL directly against the database (as someone tampering with it would)."""
        await execute_sql(self.sessionmaker, statement, **params)


def _install_test_auth(
    app: FastAPI, minter: TokenMinter, revocations: RevocationChecker | None = None
) -> None:
    # Tokens minted here instead of fetched from a running auth service.
    verifier = TokenVerifier(minter.key_source(), minter.issuer, revocations=revocations)
    install_auth(app, AuthContext(verifier))


@pytest.fixture
def admin_settings() -> dict[str, Any]:
    """Extra settings of ``admin_api``'s app (a test module overrides this fixture)."""
    return {}


@pytest.fixture
async def admin_api(database_url: str, admin_settings: dict[str, Any]) -> AsyncIterator[AdminApi]:
    app = create_app(Settings(database_url=database_url, log_json=False, **admin_settings))
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

        async def start(
            database_url: str, revocations: RevocationChecker | None = None
        ) -> LiveAdmin:
            app = create_app(Settings(database_url=database_url, log_json=False))
            base_url, _ = await stack.enter_async_context(serve(app))
            _install_test_auth(app, minter, revocations)
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10.0))
            )
            return LiveAdmin(app, client, minter)

        yield start
