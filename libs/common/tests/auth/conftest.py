"""Fixtures for the auth tests: a token minter, a fake clock and fake auth endpoints.

Fake endpoints are tiny FastAPI apps reached through ``httpx.ASGITransport``; a switchable
transport in front of them can make auth "unreachable" (connection refused) on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from flightdeck_common.auth.keys import JWKS_PATH, JwksKeySource
from flightdeck_common.auth.testing import TokenMinter
from flightdeck_common.auth.verifier import TokenVerifier

AUTH_BASE_URL = "http://auth.test"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SwitchableTransport(httpx.AsyncBaseTransport):
    """ASGI transport to a fake app that can be made unreachable (connection refused)."""

    def __init__(self, app: FastAPI) -> None:
        self.asgi = httpx.ASGITransport(app=app)
        self.unreachable = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.asgi.handle_async_request(request)


class JwksServer:
    """Auth's JWKS endpoint: serves ``document``, counts fetches, can fail or be slow."""

    url = AUTH_BASE_URL + JWKS_PATH

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        self.status = 200
        self.delay = 0.0
        app = FastAPI()

        @app.get(JWKS_PATH)
        async def jwks() -> Any:
            self.fetches += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status != 200:
                return JSONResponse({"detail": "unavailable"}, status_code=self.status)
            return self.document

        self.transport = SwitchableTransport(app)
        self.http = httpx.AsyncClient(transport=self.transport, base_url=AUTH_BASE_URL)

    def fail(self, *, unreachable: bool = False) -> None:
        """Make the endpoint answer 503 (or refuse connections)."""
        self.status = 503
        self.transport.unreachable = unreachable

    def recover(self) -> None:
        self.status = 200
        self.transport.unreachable = False


class FakeAuth:
    """Auth's token endpoint and internal revocation feed, with recorded requests."""

    def __init__(self) -> None:
        self.revocations: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, str]] = []
        self.feed_requests: list[dict[str, Any]] = []
        self.token_status = 200
        self.token_body: dict[str, Any] | None = None
        self.expires_in = 300
        self.feed_status = 200
        self.feed_body: Any = None  # served as is instead of the computed page
        self.fail_pages_after: int | None = None  # pages with `after` beyond this answer 500
        self.token_delay = 0.0
        self.issued = 0
        self.valid_token: str | None = None
        app = FastAPI()

        @app.post("/auth/service-token")
        async def service_token(request: Request) -> Any:
            form = await request.form()
            self.token_requests.append({k: str(v) for k, v in form.items()})
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if self.token_status != 200:
                body = {"error": "invalid_client"} if self.token_status < 500 else {}
                return JSONResponse(body, status_code=self.token_status)
            if self.token_body is not None:
                return self.token_body
            self.issued += 1
            self.valid_token = f"service-token-{self.issued}"
            return {
                "access_token": self.valid_token,
                "token_type": "bearer",
                "expires_in": self.expires_in,
            }

        @app.get("/auth/internal/revocations")
        async def revocation_feed(request: Request, after: int = 0, limit: int = 500) -> Any:
            self.feed_requests.append(
                {"after": after, "limit": limit, "auth": request.headers.get("authorization")}
            )
            if self.feed_status != 200:
                return JSONResponse({"detail": "unavailable"}, status_code=self.feed_status)
            if self.fail_pages_after is not None and after > self.fail_pages_after:
                return JSONResponse({"detail": "database error"}, status_code=500)
            if request.headers.get("authorization") != f"Bearer {self.valid_token}":
                return JSONResponse({"code": "invalid_token"}, status_code=401)
            if self.feed_body is not None:
                return self.feed_body
            items = [item for item in self.revocations if item["id"] > after][:limit]
            more = len(items) == limit and items[-1]["id"] < self.revocations[-1]["id"]
            return {"items": items, "next_cursor": items[-1]["id"] if more else None}

        self.transport = SwitchableTransport(app)
        self.http = httpx.AsyncClient(transport=self.transport, base_url=AUTH_BASE_URL)


@pytest.fixture
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def jwks_server(minter: TokenMinter) -> AsyncIterator[JwksServer]:
    server = JwksServer(minter.jwks())
    async with server.http:
        yield server


@pytest.fixture
def key_source(jwks_server: JwksServer, clock: FakeClock) -> JwksKeySource:
    return JwksKeySource(jwks_server.url, jwks_server.http, min_refetch_interval=60.0, clock=clock)


@pytest.fixture
def verifier(key_source: JwksKeySource) -> TokenVerifier:
    return TokenVerifier(key_source, leeway_seconds=10)


@pytest.fixture
async def fake_auth() -> AsyncIterator[FakeAuth]:
    auth = FakeAuth()
    async with auth.http:
        yield auth
