"""Signed GitHub fixtures through Traefik into a real pipeline process; a live SSE client
sees the change; runs are readable with a token from the real auth service."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.passwords import PasswordHasher
from flightdeck_pipeline.webhooks.signatures import sign

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parents[1] / "fixtures" / "github"
EVENTS = ["workflow_run", "workflow_job", "deployment", "deployment_status", "push", "ping"]


def _deliver(http: httpx.Client, secret: str, event: str, body: bytes) -> httpx.Response:
    return http.post(
        "/pipelines/webhooks/github",
        content=body,
        headers={
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, body),
            "Content-Type": "application/json",
        },
    )


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
    created = http.post(
        "/auth/internal/users",
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
        for event in EVENTS:
            for path in sorted((FIXTURES / event).glob("*.json")):
                response = _deliver(http, secret, event, path.read_bytes())
                expected = (200, "pong") if event == "ping" else (202, "processed")
                got = (response.status_code, response.json().get("result"))
                assert got == expected, f"{event}/{path.name}: {response.text}"
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
        listener.join(15)
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
