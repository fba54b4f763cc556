"""Checks every service's test suite runs against its own app (shared, not copied)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy import text

from flightdeck_common.migrations import alembic_config
from flightdeck_common.resources import Resources


@contextlib.asynccontextmanager
async def running_app(
    app: FastAPI, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield an in-process client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


def run_service_cli(
    service: str, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``flightdeck-<service> <args>`` as a real process (no stdin), output captured."""
    return subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", f"flightdeck_{service}.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def bearer(token: str) -> dict[str, str]:
    """An Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


def head_revision(migrations_dir: Path) -> str:
    """The newest revision in a service's migrations directory."""
    script = ScriptDirectory.from_config(alembic_config(migrations_dir, "sqlite://"))
    head = script.get_current_head()
    assert head is not None, f"no migrations in {migrations_dir}"
    return head


async def applied_revision(app: FastAPI) -> str | None:
    """The revision recorded in the running app's database."""
    resources: Resources = app.state.resources
    async with resources.engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        value = result.scalar_one_or_none()
        return str(value) if value is not None else None


async def assert_service_basics(client: httpx.AsyncClient, prefix: str, title: str) -> None:
    """Health, readiness, metrics, docs and schema are where the architecture says."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["status"] == "ok"

    schema = await client.get(f"{prefix}/openapi.json")
    assert schema.status_code == 200
    assert schema.json()["info"]["title"] == title
    assert not any(
        path.startswith(("/healthz", "/readyz", "/metrics")) for path in schema.json()["paths"]
    )
    docs = await client.get(f"{prefix}/docs")
    assert docs.status_code == 200
    assert f"{prefix}/openapi.json" in docs.text
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]

    missing = await client.get(f"{prefix}/no/such/route")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"

    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "http_request_duration_seconds_bucket" in metrics.text
    assert f'handler="{prefix}/openapi.json"' in metrics.text
