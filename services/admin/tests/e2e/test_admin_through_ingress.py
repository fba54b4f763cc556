"""Issue 5 end to end, through Traefik to real service processes: a registration request
is signed and approved, the newcomer logs in, and the audit log holds it all in a chain
that verifies; with the admin service stopped, auth's and pipeline's events wait in their
outboxes and arrive exactly once, in order, when it comes back."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.testing.stack_users import (
    audit_events,
    create_user,
    register_approval_key,
)

pytestmark = pytest.mark.e2e

DELIVERY_TIMEOUT = 45.0  # the stack caps relay backoff at 2 s; admin restarts in seconds


def _user(stack: Stack, http: httpx.Client, role: str) -> tuple[str, str]:
    return create_user(stack, http, role, prefix="e2e")


def _login(http: httpx.Client, username: str, password: str) -> dict[str, str]:
    response = http.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _wait_for(
    condition: Callable[[], list[dict[str, Any]] | None], what: str
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _backlog(stack: Stack, service: str) -> list[dict[str, Any]] | None:
    """Non-None once the service's ``flightdeck_outbox_pending`` gauge is above zero."""
    metrics = httpx.get(f"{stack.service_url(service)}/metrics", timeout=5).text
    prefix = f'flightdeck_outbox_pending{{service="{service}"}}'
    values = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix)]
    return [{"pending": values[0]}] if values and values[0] > 0 else None


def _verify(http: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    response = http.get("/admin/audit-events/verify", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_signed_onboarding_story(flightdeck_stack: Stack) -> None:
    with httpx.Client(base_url=flightdeck_stack.ingress_url, timeout=15, trust_env=False) as http:
        reviewer, reviewer_password = _user(flightdeck_stack, http, "admin")
        admin = _login(http, reviewer, reviewer_password)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        register_approval_key(http, admin, reviewer_password, pem.decode())

        newcomer = f"newcomer-{secrets.token_hex(4)}"
        password = f"a-long-passphrase-{secrets.token_urlsafe(8)}"
        filed = http.post(
            "/admin/registration-requests",
            json={"username": newcomer, "password": password, "reason": "joins the SRE team"},
        )
        assert filed.status_code == 202, filed.text
        request_id = filed.json()["id"]
        assert "password" not in filed.text
        assert (
            http.post("/auth/login", json={"username": newcomer, "password": password}).status_code
            == 401
        )

        signed_at = datetime.now(UTC).isoformat()
        signature = key.sign(
            f"{request_id}:approve:operator:{newcomer}:{signed_at}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        approved = http.post(
            f"/admin/registration-requests/{request_id}/approve",
            json={
                "signed_at": signed_at,
                "signature": base64.b64encode(signature).decode(),
                "note": "welcome",
                "role": "operator",
            },
            headers=admin,
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "approved"
        assert approved.json()["signature"] == base64.b64encode(signature).decode()
        assert approved.json()["public_key_pem"] == pem.decode()
        signature_sha256 = hashlib.sha256(signature).hexdigest()

        _login(http, newcomer, password)

        def story_arrived() -> list[dict[str, Any]] | None:
            found = [
                *audit_events(http, admin, type="admin.registration.requested"),
                *audit_events(http, admin, type="admin.registration.approved"),
                *audit_events(http, admin, type="auth.login.succeeded", actor=newcomer),
            ]
            mine = [
                e
                for e in found
                if newcomer in (e["actor"], e["subject"], e["data"].get("username"))
            ]
            types = {e["type"] for e in mine}
            return mine if len(types) == 3 else None

        story = _wait_for(story_arrived, "request, approval and login in the audit log")
        approval = next(e for e in story if e["type"] == "admin.registration.approved")
        assert approval["data"]["signature_sha256"] == signature_sha256
        assert approval["actor"] == reviewer
        decisions = http.get("/admin/policy-decisions", headers=admin)
        assert decisions.status_code == 200, decisions.text
        assert approval["id"] in {d["id"] for d in decisions.json()["items"]}

        verdict = _verify(http, admin)
        assert verdict["valid"] is True, verdict
        assert verdict["checked"] >= 3


def test_events_wait_while_admin_is_down(flightdeck_stack: Stack) -> None:
    stack = flightdeck_stack
    with httpx.Client(base_url=stack.ingress_url, timeout=15, trust_env=False) as http:
        reviewer, reviewer_password = _user(stack, http, "admin")
        victim, victim_password = _user(stack, http, "viewer")
        stack.stop_service("admin")
        try:
            outage = http.get("/admin/audit-events", headers={"Authorization": "Bearer x"})
            assert outage.status_code in (502, 503)  # Traefik: nobody serves /admin now
            for attempt in range(3):
                _login(http, victim, victim_password)
                failed = http.post(
                    "/auth/login", json={"username": victim, "password": f"wrong-{attempt}"}
                )
                assert failed.status_code == 401
            deliveries = [f"e2e-forged-{uuid.uuid4()}" for _ in range(4)]
            for delivery in deliveries:
                forged = http.post(
                    "/pipelines/webhooks/github",
                    content=b'{"zen": "forged"}',
                    headers={
                        "X-GitHub-Event": "ping",
                        "X-GitHub-Delivery": delivery,
                        "X-Hub-Signature-256": "sha256=" + "0" * 64,
                        "Content-Type": "application/json",
                    },
                )
                assert forged.status_code == 401, forged.text
            # They wait in the outboxes: the relays report a backlog (refreshed every second).
            for service in ("auth", "pipeline"):
                _wait_for(lambda service=service: _backlog(stack, service), f"{service} backlog")
        finally:
            stack.start_service("admin")
        admin = _login(http, reviewer, reviewer_password)

        def forged_events() -> list[dict[str, Any]]:
            # Rejected signatures arrive aggregated: one event per source per interval
            # (1 s in this stack) naming the rejected delivery ids.
            return [
                e for e in audit_events(http, admin, type="pipeline.webhook.signature_rejected")
                if set(e["data"].get("delivery_ids", [])) & set(deliveries)
            ]  # fmt: skip

        def all_arrived() -> list[dict[str, Any]] | None:
            logins = audit_events(http, admin, actor=victim)
            forged = forged_events()
            kinds = [e["type"] for e in logins]
            done = (
                kinds.count("auth.login.succeeded") >= 3 and kinds.count("auth.login.failed") >= 3
            )
            named = [i for e in forged for i in e["data"]["delivery_ids"] if i in deliveries]
            return [*logins, *forged] if done and sorted(named) == sorted(deliveries) else None

        arrived = _wait_for(all_arrived, "the events kept while admin was down")
        time.sleep(1.5)  # a redelivery, if there were one, would land now
        forged_again = forged_events()
        again = audit_events(http, admin, actor=victim) + forged_again
        ids = [e["id"] for e in again]
        assert len(ids) == len(set(ids)) == len(arrived), "an event arrived twice or went missing"
        # Fewer events than rejections, each delivery named once, all from the ingress' client.
        named = [i for e in forged_again for i in e["data"]["delivery_ids"] if i in deliveries]
        assert sorted(named) == sorted(deliveries)
        assert len(forged_again) < len(deliveries)
        assert sum(e["data"]["rejected"] for e in forged_again) >= len(deliveries)
        kinds = [e["type"] for e in again if e["service"] == "auth"]
        assert kinds.count("auth.login.succeeded") == 3
        assert kinds.count("auth.login.failed") == 3
        for service in ("auth", "pipeline"):
            mine = [e for e in again if e["service"] == service]
            assert [e["occurred_at"] for e in mine] == sorted(e["occurred_at"] for e in mine)
        verdict = _verify(http, admin)
        assert verdict["valid"] is True, verdict
