"""Two admin processes on one PostgreSQL database append to the audit chain at the same
time (every batch is also redelivered to the other process): one gap-free chain, every
event exactly once, and ``verify`` says valid."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from flightdeck_common.devstack.ports import free_port, wait_for_http
from flightdeck_common.devstack.processes import ManagedProcess
from flightdeck_common.devstack.stack import Stack
from flightdeck_common.testing.service_checks import run_service_cli
from flightdeck_common.testing.stack_users import create_user

pytestmark = pytest.mark.e2e

BATCHES = 40
BATCH_SIZE = 25


@pytest.fixture
def two_admins(
    flightdeck_stack: Stack, postgres_database_url: str, tmp_path: Path
) -> Iterator[list[str]]:
    env = {
        **os.environ,
        "FLIGHTDECK_ADMIN_DATABASE_URL": postgres_database_url,
        "FLIGHTDECK_ADMIN_MIGRATE_ON_START": "false",
        "FLIGHTDECK_ADMIN_OUTBOX_RELAY_ENABLED": "false",
        "AUTH_URL": flightdeck_stack.service_url("auth"),
        "LOG_JSON": "false",
    }
    env.pop("REDIS_URL", None)
    migrated = run_service_cli("admin", "migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    processes = []
    urls = []
    try:
        for index in range(2):
            port = free_port()
            argv = [
                sys.executable, "-m", "uvicorn", "flightdeck_admin.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            ]  # fmt: skip
            process = ManagedProcess(f"admin-{index}", argv, env, tmp_path / f"admin-{index}.log")
            processes.append(process.start())
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_for_http(f"{url}/healthz", 30, check=process.ensure_running)
        yield urls
    finally:
        for process in processes:
            process.stop()


def _event(batch: int, index: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "test.concurrent_append",
        "service": "pipeline",
        "actor": f"writer-{batch % 2}",
        "subject": f"batch-{batch}",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"batch": batch, "index": index},
    }


async def _append_everywhere(urls: list[str], token: str) -> list[dict[str, Any]]:
    batches = [[_event(b, i) for i in range(BATCH_SIZE)] for b in range(BATCHES)]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:

        async def post(url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
            response = await http.post(
                f"{url}/admin/internal/audit-events", json={"events": events}, headers=headers
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        # Each batch goes to one process and, at the same time, again to the other.
        calls = [post(urls[b % 2], events) for b, events in enumerate(batches)]
        calls += [post(urls[(b + 1) % 2], events) for b, events in enumerate(batches)]
        return list(await asyncio.gather(*calls))


def test_two_processes_keep_one_chain(
    flightdeck_stack: Stack, two_admins: list[str], postgres_database_url: str
) -> None:
    env = flightdeck_stack.service_env()
    with httpx.Client(base_url=flightdeck_stack.ingress_url, timeout=15, trust_env=False) as http:
        token = http.post(
            "/auth/service-token",
            data={
                "grant_type": "client_credentials",
                "client_id": env["FLIGHTDECK_PIPELINE_SERVICE_CLIENT_ID"],
                "client_secret": env["FLIGHTDECK_PIPELINE_SERVICE_CLIENT_SECRET"],
                "scope": "flightdeck:admin-internal",
            },
        ).json()["access_token"]
        username, password = create_user(flightdeck_stack, http, "admin", prefix="chain-admin")
        login = http.post(
            "/auth/login",
            json={"username": username, "password": password},
        )
        assert login.status_code == 200, login.text
        user_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    answers = asyncio.run(_append_everywhere(two_admins, token))
    total = BATCHES * BATCH_SIZE
    assert sum(a["accepted"] for a in answers) == total
    assert sum(a["duplicates"] for a in answers) == total

    for url in two_admins:
        verdict = httpx.get(f"{url}/admin/audit-events/verify", headers=user_headers, timeout=30)
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["valid"] is True, verdict.json()
        assert verdict.json()["checked"] == total

    seqs, distinct = asyncio.run(_stored(postgres_database_url))
    assert seqs == list(range(1, total + 1))
    assert distinct == total


async def _stored(database_url: str) -> tuple[list[int], int]:
    """The chain positions and the number of distinct event ids, read directly."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            seqs = await connection.scalars(text("SELECT seq FROM audit_events ORDER BY seq"))
            distinct = await connection.scalar(
                text("SELECT count(DISTINCT event_id) FROM audit_events")
            )
            return list(seqs), int(distinct or 0)
    finally:
        await engine.dispose()
