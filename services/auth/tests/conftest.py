"""Fixtures of the auth service's tests: the app on SQLite (in-process fallbacks) and on
PostgreSQL + Redis, with a client and helpers to log in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from flightdeck_auth.app import create_app
from flightdeck_auth.outbox import OutboxEvent
from flightdeck_auth.settings import Settings
from flightdeck_common.testing.plugin import FAST_PASSWORD_HASHING
from flightdeck_common.testing.service_checks import running_app

ADMIN_PASSWORD = "correct-horse-battery-42"
SERVICE_CLIENT = "admin-service"
SERVICE_SECRET = "service-secret-for-tests-0123456789"
# Holds only what the pipeline service holds: the revocation feed and admin's audit intake.
PIPELINE_CLIENT = "pipeline-service"
PIPELINE_SECRET = "pipeline-secret-for-tests-0123456789"


@dataclass
class AuthHarness:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    async def login(
        self, username: str = "admin", password: str = ADMIN_PASSWORD
    ) -> httpx.Response:
        return await self.client.post(
            "/auth/login", json={"username": username, "password": password}
        )

    async def tokens(
        self, username: str = "admin", password: str = ADMIN_PASSWORD
    ) -> dict[str, Any]:
        response = await self.login(username, password)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def service_token(
        self,
        scope: str | None = None,
        client_id: str = SERVICE_CLIENT,
        client_secret: str = SERVICE_SECRET,
    ) -> str:
        """A service token of admin's account (both auth audiences), or of ``client_id``."""
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        if scope:
            form["scope"] = scope
        response = await self.client.post("/auth/service-token", data=form)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    admin_password: str = ADMIN_PASSWORD

    @staticmethod
    def totp(secret: str, offset_steps: int = 0, at: float | None = None) -> str:
        """The TOTP code for ``at`` (default now), or ``offset_steps`` 30-second steps later."""
        return str(pyotp.TOTP(secret).at((at or time.time()) + 30 * offset_steps))

    async def pipeline_token(self) -> str:
        """A service token of the pipeline's account (revocation feed, audit intake)."""
        return await self.service_token(client_id=PIPELINE_CLIENT, client_secret=PIPELINE_SECRET)

    async def enrol_totp(self, headers: dict[str, str]) -> str:
        """Enrol and confirm TOTP for the signed-in user; returns the secret. The confirm
        spends the previous step's code, so ``step_up`` codes 0 and 1 are still fresh."""
        enrolment = await self.client.post("/auth/me/mfa/totp", headers=headers)
        assert enrolment.status_code == 201, enrolment.text
        secret = str(enrolment.json()["secret"])
        confirm = await self.client.post(
            "/auth/me/mfa/totp/confirm", json={"code": self.totp(secret, -1)}, headers=headers
        )
        assert confirm.status_code == 200, confirm.text
        return secret

    def step_up(
        self, secret: str, offset_steps: int = 0, password: str = ADMIN_PASSWORD
    ) -> dict[str, str]:
        """The step-up fields (current password, TOTP code) of a sensitive request."""
        return {"current_password": password, "totp_code": self.totp(secret, offset_steps)}

    async def outbox_types(self) -> list[str]:
        async with self.app.state.resources.sessionmaker() as session:
            rows = await session.scalars(
                select(OutboxEvent.event_type).order_by(OutboxEvent.created_at)
            )
            return list(rows.all())


@pytest.fixture
def make_settings(backend: dict[str, Any]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **backend,
            **FAST_PASSWORD_HASHING,
            "log_json": False,
            "bootstrap_admin_password": ADMIN_PASSWORD,
            "bootstrap_service_accounts": (
                f"{SERVICE_CLIENT}:{SERVICE_SECRET}:flightdeck:auth-revocations "
                "flightdeck:auth-users,"
                f"{PIPELINE_CLIENT}:{PIPELINE_SECRET}:flightdeck:auth-revocations "
                "flightdeck:admin-internal"
            ),
            "rate_limit_login": "1000/minute",
            "risk_off_hours_start": 0,
            "risk_off_hours_end": 0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def harness_factory(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    stacks: list[Any] = []

    async def start(**overrides: Any) -> AuthHarness:
        settings = make_settings(**overrides)
        app = create_app(settings)
        context = running_app(app)
        client = await context.__aenter__()
        stacks.append(context)
        return AuthHarness(app, client, settings)

    yield start
    for context in reversed(stacks):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def auth(harness_factory: Callable[..., Any]) -> AuthHarness:
    harness: AuthHarness = await harness_factory()
    return harness
