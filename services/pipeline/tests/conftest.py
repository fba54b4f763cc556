"""Fixtures of the pipeline service's tests: the app on SQLite or PostgreSQL + Redis,
tokens minted locally, and signed GitHub deliveries from the shipped fixtures."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from flightdeck_common.auth.claims import Role
from flightdeck_common.auth.dependencies import AuthContext, install_auth
from flightdeck_common.auth.testing import TokenMinter
from flightdeck_common.auth.verifier import TokenVerifier
from flightdeck_common.testing.service_checks import running_app
from flightdeck_pipeline.app import create_app
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks.signatures import sign

FIXTURES = Path(__file__).parent / "fixtures" / "github"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789abcdef"


def fixture_body(event: str, name: str = "payload.json") -> bytes:
    return (FIXTURES / event / name).read_bytes()


@dataclass
class PipelineHarness:
    app: FastAPI
    client: httpx.AsyncClient
    minter: TokenMinter
    settings: Settings

    def headers(self, role: Role = Role.VIEWER) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.minter.user_token(role=role, username=f'{role}-user')}"
        }

    async def deliver(
        self,
        event: str,
        body: bytes | dict[str, Any],
        *,
        delivery_id: str | None = None,
        secret: str = WEBHOOK_SECRET,
        headers: dict[str, str] | None = None,
        mapped: bool = True,
    ) -> httpx.Response:
        """Send a signed delivery; with ``mapped``, return once the worker mapped what is
        pending (the answer 202 only says it is stored)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, raw),
            "Content-Type": "application/json",
            **(headers or {}),
        }
        response = await self.client.post("/pipelines/webhooks/github", content=raw, headers=sent)
        if mapped and response.status_code == 202:
            await self.drained()
        return response

    async def drained(self) -> None:
        """Wait until the app's mapping worker has nothing left to take."""
        await self.app.state.delivery_worker.drained()

    async def stored_result(self, delivery_id: str) -> str | None:
        """The stored result of a delivery (pending, processed, ignored, failed)."""
        from flightdeck_pipeline.webhooks.repository import DeliveryRepository

        async with self.app.state.resources.sessionmaker() as session:
            stored = await DeliveryRepository(session).by_delivery_id(delivery_id)
            return stored.result if stored is not None else None


@pytest.fixture
async def pipeline_factory(backend: dict[str, Any]) -> AsyncIterator[Callable[..., Any]]:
    contexts: list[Any] = []

    async def start(**overrides: Any) -> PipelineHarness:
        settings = Settings(
            **{
                **backend,
                "log_json": False,
                "github_webhook_secrets": f"{WEBHOOK_SECRET},an-older-secret-still-accepted-0000",
                **overrides,
            }
        )
        app = create_app(settings)
        context = running_app(app)
        client = await context.__aenter__()
        contexts.append(context)
        minter = TokenMinter()
        # Tokens minted here instead of fetched from a running auth service.
        install_auth(app, AuthContext(TokenVerifier(minter.key_source(), minter.issuer)))
        return PipelineHarness(app, client, minter, settings)

    yield start
    for context in reversed(contexts):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def pipeline(pipeline_factory: Callable[..., Any]) -> PipelineHarness:
    harness: PipelineHarness = await pipeline_factory()
    return harness
