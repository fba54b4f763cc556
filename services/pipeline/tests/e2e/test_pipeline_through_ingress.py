"""Signed GitHub fixtures through Traefik into a real pipeline process, acknowledged once
stored and mapped behind the answer (their stored result read back through the deliveries
API); a live SSE client sees the change; runs are readable with a token from the real auth
service."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.testing.stack_users import create_user
from flightdeck_pipeline.webhooks.signatures import sign

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parents[1] / "fixtures" / "github"
EVENTS = ["workflow_run", "workflow_job", "deployment", "deployment_status", "push", "ping"]
MAPPED_WITHIN = 30.0  # the worker maps behind the answer, typically within a second


def _deliver(
    http: httpx.Client, secret: str, event: str, body: bytes, delivery_id: str | None = None
) -> httpx.Response:
    return http.post(
        "/pipelines/webhooks/github",
        content=body,
        headers={
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, body),
            "Content-Type": "application/json",
        },
    )


def _operator_headers(stack: Stack, http: httpx.Client) -> dict[str, str]:
    username, password = create_user(stack, http, "operator", prefix="e2e-pipeline")
    login = http.post("/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _mapped_results(
    http: httpx.Client, headers: dict[str, str], delivery_ids: Iterable[str]
) -> dict[str, str]:
    """The stored result of each delivery once none is pending any more (bounded wait)."""
    results: dict[str, str] = {}
    deadline = time.monotonic() + MAPPED_WITHIN
    while True:
        for delivery_id in delivery_ids:
            if results.get(delivery_id, "pending") == "pending":
                read = http.get(f"/pipelines/webhooks/deliveries/{delivery_id}", headers=headers)
                assert read.status_code == 200, read.text
                results[delivery_id] = read.json()["result"]
        pending = [delivery for delivery, result in results.items() if result == "pending"]
        if not pending:
            return results
        if time.monotonic() > deadline:
            raise AssertionError(f"still pending after {MAPPED_WITHIN:g} s: {pending}")
        time.sleep(0.2)


def _viewer_token(stack: Stack, http: httpx.Client) -> str:
    """A viewer created through auth's internal API with the stack's service account."""
    env = stack.service_env()
    service = http.post(
        "/auth/service-token",
        data={
            "grant_type": "client_credentials",
            "client_id": env["FLIGHTDECK_ADMIN_SERVICE_CLIENT_ID"],
            "client_secret": env["FLIGHTDECK_ADMIN_SERVICE_CLIENT_SECRET"],
        },
    )
    assert service.status_code == 200, service.text
    password = "viewer-passphrase-for-e2e"
    password_hash = asyncio.run(PasswordHasher().hash(password))
    created = http.post(  # auth's internal API: where admin calls it, not the ingress
        f"{stack.service_call_url('auth')}/auth/internal/users",
        json={"username": "e2e-viewer", "password_hash": password_hash, "role": "viewer",
              "idempotency_key": "e2e-viewer"},
        headers={"Authorization": f"Bearer {service.json()['access_token']}"},
    )  # fmt: skip
    assert created.status_code in (200, 201), created.text
    login = http.post("/auth/login", json={"username": "e2e-viewer", "password": password})
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


def test_every_fixture_through_the_ingress(flightdeck_stack: Stack) -> None:
    secret = flightdeck_stack.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"]
    with httpx.Client(base_url=flightdeck_stack.ingress_url, timeout=15, trust_env=False) as http:
        operator = _operator_headers(flightdeck_stack, http)
        fixtures: dict[str, str] = {}  # delivery id -> fixture
        for event in EVENTS:
            for path in sorted((FIXTURES / event).glob("*.json")):
                delivery_id = str(uuid.uuid4())
                response = _deliver(http, secret, event, path.read_bytes(), delivery_id)
                expected = (200, "pong") if event == "ping" else (202, "accepted")
                got = (response.status_code, response.json().get("result"))
                assert got == expected, f"{event}/{path.name}: {response.text}"
                if event != "ping":
                    fixtures[delivery_id] = f"{event}/{path.name}"
        # Stored at the answer, mapped behind it: each one's stored result is processed.
        results = _mapped_results(http, operator, fixtures)
        mapped = {fixtures[delivery]: result for delivery, result in results.items()}
        assert mapped == dict.fromkeys(fixtures.values(), "processed")
        forged = http.post(
            "/pipelines/webhooks/github",
            content=b"{}",
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": "x",
                "X-Hub-Signature-256": "sha256=" + "0" * 64,
            },
        )
        assert forged.status_code == 401


def test_live_event_reaches_a_client_connected_before_the_webhook(flightdeck_stack: Stack) -> None:
    secret = flightdeck_stack.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"]
    with httpx.Client(base_url=flightdeck_stack.ingress_url, timeout=15, trust_env=False) as http:
        token = _viewer_token(flightdeck_stack, http)
        received: list[dict[str, Any]] = []
        connected = threading.Event()

        def listen() -> None:
            headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
            with (
                httpx.Client(
                    base_url=flightdeck_stack.ingress_url, timeout=20, trust_env=False
                ) as sse,
                sse.stream("GET", "/pipelines/events", headers=headers) as stream,
            ):
                connected.set()
                event: dict[str, Any] = {}
                for line in stream.iter_lines():
                    if line.startswith("id:"):
                        event["id"] = line[3:].strip()
                    elif line.startswith("event:"):
                        event["event"] = line[6:].strip()
                    elif line.startswith("data:"):
                        event["data"] = json.loads(line[5:].strip())
                    elif line == "" and "data" in event:
                        received.append(event)
                        return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert connected.wait(10)
        time.sleep(0.5)
        body = json.loads((FIXTURES / "workflow_run" / "requested.payload.json").read_bytes())
        body["workflow_run"]["id"] = 424242
        assert _deliver(http, secret, "workflow_run", json.dumps(body).encode()).status_code == 202
        listener.join(15)  # the event is published once the delivery is mapped
        assert received, "no event arrived"
        assert received[0]["event"] == "run.updated"
        assert received[0]["data"]["run_id"] == 424242

        runs = http.get(
            "/pipelines",
            params={"repository": "octo-org/octo-repo"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert runs.status_code == 200
        assert 424242 in [run["run_id"] for run in runs.json()["items"]]
