"""Fixtures of the onboarding tests: the admin app talking to a REAL auth app in process.

Auth and admin each have their own database (two SQLite files, or two PostgreSQL
databases with a shared Redis). Admin reaches auth through an ``httpx`` transport that a
test can switch off (auth unreachable) or make lose auth's answers.

Helpers are fixtures or harness methods (tests never import this module).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from fastapi import FastAPI
from sqlalchemy import select, update

from flightdeck_admin.app import create_app as create_admin_app
from flightdeck_admin.outbox import OutboxEvent
from flightdeck_admin.registrations.models import RegistrationRequest
from flightdeck_admin.settings import Settings as AdminSettings
from flightdeck_auth.app import create_app as create_auth_app
from flightdeck_auth.settings import Settings as AuthSettings
from flightdeck_common.auth.client import TRANSPORT_KEY
from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.resources import Resources
from flightdeck_common.testing.plugin import FAST_PASSWORD_HASHING
from flightdeck_common.testing.service_checks import bearer, running_app

ADMIN_PASSWORD = "correct-horse-battery-42"
SERVICE_CLIENT = "admin-service"
SERVICE_SECRET = "admin-service-secret-for-tests-0123456789"
REQUEST_PASSWORD = "a-long-and-unusual-passphrase"
SigningKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
RequestFilter = Callable[[httpx.Request], bool]


class AuthTransport(httpx.AsyncBaseTransport):
    """Admin's way to the in-process auth app.

    ``unreachable(request)`` true: the request fails as if auth were down (nothing reaches
    auth). ``bad_gateway(request)`` true: a proxy answers 502 (nothing reaches auth either,
    but admin cannot know). ``answer_lost(request)`` true: auth handles the request, then
    the connection drops before its answer arrives.
    """

    def __init__(self, app: FastAPI) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.unreachable: RequestFilter | None = None
        self.bad_gateway: RequestFilter | None = None
        self.answer_lost: RequestFilter | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable is not None and self.unreachable(request):
            raise httpx.ConnectError("auth is down (test)", request=request)
        if self.bad_gateway is not None and self.bad_gateway(request):
            return httpx.Response(502, text="bad gateway (test)", request=request)
        response = await self._inner.handle_async_request(request)
        if self.answer_lost is not None and self.answer_lost(request):
            await response.aread()
            raise httpx.ReadError("connection lost (test)", request=request)
        return response


@dataclass
class Onboarding:
    auth_app: FastAPI
    auth: httpx.AsyncClient
    admin_app: FastAPI
    admin: httpx.AsyncClient
    transport: AuthTransport
    admin_settings: AdminSettings
    _tokens: dict[str, str] = field(default_factory=dict)
    # username -> (TOTP secret, the next step offset to use for a code)
    _totp: dict[str, tuple[str, int]] = field(default_factory=dict)

    # --- auth side ------------------------------------------------------------------

    async def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        response = await self.auth.post(
            "/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def headers(
        self, username: str = "admin", password: str = ADMIN_PASSWORD
    ) -> dict[str, str]:
        """Authorization of ``username`` (logged in once per test)."""
        if username not in self._tokens:
            self._tokens[username] = await self.login(username, password)
        return bearer(self._tokens[username])

    async def service_headers(self) -> dict[str, str]:
        response = await self.auth.post(
            "/auth/service-token",
            data={
                "grant_type": "client_credentials",
                "client_id": SERVICE_CLIENT,
                "client_secret": SERVICE_SECRET,
            },
        )
        assert response.status_code == 200, response.text
        return bearer(response.json()["access_token"])

    async def create_auth_user(
        self, username: str, password: str, role: str = "viewer", **extra: Any
    ) -> dict[str, Any]:
        """A user made directly at auth (not through a registration). Auth creates an
        admin only from a signed approval, so an admin is made a viewer first, then
        promoted through the internal API on the bootstrap admin's behalf."""
        service = await self.service_headers()
        response = await self.auth.post(
            "/auth/internal/users",
            json={
                "username": username,
                "password_hash": await PasswordHasher(
                    time_cost=FAST_PASSWORD_HASHING["password_hash_time_cost"],
                    memory_cost=FAST_PASSWORD_HASHING["password_hash_memory_kib"],
                ).hash(password),
                "role": "viewer" if role == "admin" else role,
                **extra,
            },
            headers=service,
        )
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        if role == "admin" and body["role"] != "admin":
            acting = (await self.headers())["Authorization"].removeprefix("Bearer ")
            promoted = await self.auth.patch(
                f"/auth/internal/users/{body['id']}",
                json={"role": "admin"},
                headers={**service, "X-Flightdeck-Acting-User": acting},
            )
            assert promoted.status_code == 200, promoted.text
            body = promoted.json()
        return body

    async def auth_users(self) -> dict[str, dict[str, Any]]:
        """Every user at auth by username."""
        response = await self.auth.get(
            "/auth/internal/users", params={"limit": 200}, headers=await self.service_headers()
        )
        assert response.status_code == 200, response.text
        return {u["username"]: u for u in response.json()["items"]}

    async def register_key(
        self, key: SigningKey, username: str = "admin", password: str = ADMIN_PASSWORD
    ) -> None:
        """Register ``key`` as the user's approval key: enrols TOTP first (once per user),
        then steps up with the password and a fresh code."""
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        headers = await self.headers(username, password)
        response = await self.auth.put(
            "/auth/me/approval-key",
            json={
                "public_key_pem": pem.decode(),
                "current_password": password,
                "totp_code": await self.totp_code(username, headers),
            },
            headers=headers,
        )
        assert response.status_code == 200, response.text

    async def totp_code(self, username: str, headers: dict[str, str]) -> str:
        """A TOTP code of ``username`` not used before (TOTP enrolled on first use). The
        confirmation spends the previous step's code; later calls take the next steps."""
        if username not in self._totp:
            started = await self.auth.post("/auth/me/mfa/totp", headers=headers)
            assert started.status_code == 201, started.text
            secret = str(started.json()["secret"])
            confirmed = await self.auth.post(
                "/auth/me/mfa/totp/confirm",
                json={"code": pyotp.TOTP(secret).at(time.time() - 30)},
                headers=headers,
            )
            assert confirmed.status_code == 200, confirmed.text
            self._totp[username] = (secret, 0)
        secret, offset = self._totp[username]
        self._totp[username] = (secret, offset + 1)
        return str(pyotp.TOTP(secret).at(time.time() + 30 * offset))

    # --- admin side -----------------------------------------------------------------

    async def file(
        self,
        username: str,
        password: str = REQUEST_PASSWORD,
        reason: str = "joins the team",
    ) -> httpx.Response:
        return await self.admin.post(
            "/admin/registration-requests",
            json={"username": username, "password": password, "reason": reason},
        )

    async def filed(self, username: str, password: str = REQUEST_PASSWORD) -> int:
        response = await self.file(username, password)
        assert response.status_code == 202, response.text
        return int(response.json()["id"])

    @staticmethod
    def sign(key: SigningKey, message: str) -> str:
        if isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
        else:
            signature = key.sign(message.encode())
        return base64.b64encode(signature).decode()

    async def message(
        self, request_id: int, action: str, signed_at: str, role: str | None = None
    ) -> str:
        """What a reviewer signs: "{id}:{action}:{role}:{username}:{signed_at}" (the role
        empty for a rejection; viewer when an approval names none)."""
        username = ""
        async with self._admin_sessions()() as session:
            row = await session.get(RegistrationRequest, request_id)
            if row is not None:
                username = row.username
        if action == "approve":
            role = role or "viewer"
        return f"{request_id}:{action}:{role or ''}:{username}:{signed_at}"

    async def decide(
        self,
        request_id: int,
        action: str,
        key: SigningKey,
        *,
        signed_at: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        """POST a decision signed by ``key`` over "{id}:{action}:{role}:{username}:{signed_at}"."""
        signed_at = signed_at or datetime.now(UTC).isoformat()
        role = extra.get("role")
        message = await self.message(
            request_id, action, signed_at, role if isinstance(role, str) else None
        )
        body = {"signed_at": signed_at, "signature": self.sign(key, message), **extra}
        return await self.admin.post(
            f"/admin/registration-requests/{request_id}/{action}",
            json=body,
            headers=headers or await self.headers(),
        )

    async def request_row(self, request_id: int) -> dict[str, Any]:
        """The stored request, every column (password hash included)."""
        async with self._admin_sessions()() as session:
            row = await session.get(RegistrationRequest, request_id)
            assert row is not None
            return {c.key: getattr(row, c.key) for c in RegistrationRequest.__table__.columns}

    async def set_request(self, request_id: int, **values: Any) -> None:
        async with self._admin_sessions()() as session:
            await session.execute(
                update(RegistrationRequest)
                .where(RegistrationRequest.id == request_id)
                .values(**values)
            )
            await session.commit()

    async def outbox(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Admin's outbox events (payloads), oldest first."""
        async with self._admin_sessions()() as session:
            statement = select(OutboxEvent).order_by(OutboxEvent.created_at)
            if event_type is not None:
                statement = statement.where(OutboxEvent.event_type == event_type)
            rows = (await session.scalars(statement)).all()
            return [json.loads(row.payload) for row in rows]

    def _admin_sessions(self) -> Any:
        resources: Resources = self.admin_app.state.resources
        return resources.sessionmaker


@pytest.fixture
def admin_database_url(
    request: pytest.FixtureRequest, backend: dict[str, Any], tmp_path: Path
) -> Iterator[str]:
    """Admin's own database, next to auth's: a second SQLite file, or a second PostgreSQL
    database on the session server."""
    if not backend["database_url"].startswith("postgresql"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"t_admin_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    try:
        yield server.url(name)
    finally:
        if server.is_running():
            server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def onboarding_factory(
    backend: dict[str, Any], admin_database_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """Start auth and admin (admin settings overridable); stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**admin_overrides: Any) -> Onboarding:
            auth_app = create_auth_app(
                AuthSettings(
                    **backend,
                    **FAST_PASSWORD_HASHING,
                    log_json=False,
                    bootstrap_admin_password=ADMIN_PASSWORD,
                    bootstrap_service_accounts=(
                        f"{SERVICE_CLIENT}:{SERVICE_SECRET}:flightdeck:auth-revocations "
                        "flightdeck:auth-users"
                    ),
                    rate_limit_login="1000/minute",
                    risk_off_hours_start=0,
                    risk_off_hours_end=0,
                    outbox_relay_enabled=False,
                )
            )
            auth = await stack.enter_async_context(running_app(auth_app, "http://auth"))
            transport = AuthTransport(auth_app)

            @contextlib.asynccontextmanager
            async def reach_auth_in_process(
                app: FastAPI, resources: Resources
            ) -> AsyncIterator[None]:
                resources.extras[TRANSPORT_KEY] = transport
                yield

            settings = AdminSettings(
                **{
                    "database_url": admin_database_url,
                    "redis_url": backend.get("redis_url"),
                    "auth_url": "http://auth",
                    "service_client_id": SERVICE_CLIENT,
                    "service_client_secret": SERVICE_SECRET,
                    "rate_limit_registration": "1000/hour",
                    "log_json": False,
                    **FAST_PASSWORD_HASHING,
                    **admin_overrides,
                }
            )
            admin_app = create_admin_app(settings, first_lifespan_hooks=[reach_auth_in_process])
            admin = await stack.enter_async_context(running_app(admin_app))
            return Onboarding(auth_app, auth, admin_app, admin, transport, settings)

        yield start


@pytest.fixture
async def onboarding(onboarding_factory: Callable[..., Any]) -> Onboarding:
    harness: Onboarding = await onboarding_factory()
    return harness


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
