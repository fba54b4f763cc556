"""A logout or deactivation in auth reaches another service's verifier in seconds:
through Redis when configured, through the revocation feed otherwise."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from flightdeck_common.auth.claims import TokenClaims
from flightdeck_common.auth.client import TRANSPORT_KEY, auth_client_lifespan
from flightdeck_common.auth.dependencies import CurrentUser
from flightdeck_common.resources import Resources
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import CommonSettings
from flightdeck_common.testing.service_checks import bearer, running_app

AuthHarness = Any

router = APIRouter(prefix="/elsewhere")


@router.get("/whoami")
async def whoami(user: CurrentUser) -> dict[str, str]:
    """Who the token says the caller is."""
    assert isinstance(user, TokenClaims)
    return {"sub": user.sub, "role": str(user.role)}


class _Settings(CommonSettings):
    service_name = "elsewhere"
    public_prefix = "/elsewhere"


@contextlib.asynccontextmanager
async def _other_service(
    auth: AuthHarness, tmp_path: Path, redis_url: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    """A second service wired like pipeline/admin, reaching auth in-process."""

    @contextlib.asynccontextmanager
    async def hook(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
        resources.extras[TRANSPORT_KEY] = httpx.ASGITransport(app=auth.app)
        async with auth_client_lifespan(app, resources):
            yield

    settings = _Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/elsewhere.db",
        redis_url=redis_url,
        auth_url="http://auth",
        service_client_id="admin-service",
        service_client_secret="service-secret-for-tests-0123456789",
        revocation_sync_seconds=0.2,
        log_json=False,
    )
    app = create_service_app(
        settings,
        ServiceSpec(
            title="t", description="t", version="0", routers=[router], lifespan_hooks=[hook]
        ),
    )
    async with running_app(app) as client:
        yield client


async def _rejected_within(client: httpx.AsyncClient, token: str, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < seconds:
        response = await client.get("/elsewhere/whoami", headers=bearer(token))
        if response.status_code == 401:
            assert response.json()["code"] == "token_revoked"
            return loop.time() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"token still accepted after {seconds} s")


async def test_logout_reaches_another_service(
    auth: AuthHarness, tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with _other_service(auth, tmp_path, backend.get("redis_url")) as other:
        pair = await auth.tokens()
        token = pair["access_token"]
        ok = await other.get("/elsewhere/whoami", headers=bearer(token))
        assert ok.status_code == 200  # verified with keys fetched from auth's JWKS
        assert ok.json()["role"] == "admin"
        await auth.client.post(
            "/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=bearer(token)
        )
        await _rejected_within(other, token, seconds=5)


async def test_deactivation_reaches_another_service(
    auth: AuthHarness, tmp_path: Path, backend: dict[str, Any]
) -> None:
    from flightdeck_common.passwords import PasswordHasher

    service = await auth.service_token()
    created = await auth.client.post(
        "/auth/internal/users",
        json={
            "username": "vera",
            "password_hash": await PasswordHasher().hash("vera-has-a-long-passphrase"),
            "role": "viewer",
        },
        headers=bearer(service),
    )
    token = (await auth.tokens("vera", "vera-has-a-long-passphrase"))["access_token"]
    async with _other_service(auth, tmp_path, backend.get("redis_url")) as other:
        assert (await other.get("/elsewhere/whoami", headers=bearer(token))).status_code == 200
        await auth.client.patch(
            f"/auth/internal/users/{created.json()['id']}",
            json={"is_active": False},
            headers=bearer(service),
        )
        await _rejected_within(other, token, seconds=5)
