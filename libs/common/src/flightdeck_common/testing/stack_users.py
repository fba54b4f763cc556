"""Identities and reads for end-to-end tests against a running stack: the stack's service
accounts' tokens, fresh users made through auth's internal API, the audit log, and the runs
that webhook deliveries made (mapped behind the acknowledgement, so waited for)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import struct
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

import httpx

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.passwords import PasswordHasher


def service_token(stack: Stack, http: httpx.Client, account: str) -> str:
    """A service token for the stack's ``account`` (``admin`` or ``pipeline``), issued by
    the auth service ``http`` reaches (the ingress or one replica)."""
    env = stack.service_env()
    response = http.post(
        "/auth/service-token",
        data={
            "grant_type": "client_credentials",
            "client_id": env[f"FLIGHTDECK_{account.upper()}_SERVICE_CLIENT_ID"],
            "client_secret": env[f"FLIGHTDECK_{account.upper()}_SERVICE_CLIENT_SECRET"],
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def create_user(
    stack: Stack, http: httpx.Client, role: str, prefix: str = "e2e"
) -> tuple[str, str]:
    """A fresh user with ``role``, made through auth's internal API with admin's service
    token (issued through ``http``); returns (username, password). The internal API is
    called where admin calls it (``Stack.service_call_url``): the ingress does not route it.
    Auth grants admin through that API only from a signed approval or on an admin's behalf,
    so an admin is made as production makes its first one: :func:`create_admin`."""
    username = f"{prefix}-{role}-{secrets.token_hex(4)}"
    password = f"passphrase-{secrets.token_urlsafe(12)}"
    if role == "admin":
        create_admin(stack, username, password)
        return username, password
    created = httpx.post(
        f"{stack.service_call_url('auth')}/auth/internal/users",
        json={
            "username": username,
            "password_hash": asyncio.run(PasswordHasher().hash(password)),
            "role": role,
        },
        headers={"Authorization": f"Bearer {service_token(stack, http, 'admin')}"},
        timeout=http.timeout,
        trust_env=False,
    )
    assert created.status_code == 201, created.text
    return username, password


def create_admin(stack: Stack, username: str, password: str) -> None:
    """An admin made with ``flightdeck-auth create-admin`` against the stack's auth
    database (the host path, which needs no approval: whoever runs it owns the database)."""
    result = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "flightdeck_auth.cli", "create-admin", username],
        capture_output=True,
        text=True,
        env=stack.process_env() | {"FLIGHTDECK_AUTH_NEW_ADMIN_PASSWORD": password},
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def enrol_totp(http: httpx.Client, headers: dict[str, str]) -> str:
    """Enrol and confirm TOTP for the signed-in user; returns the secret. The confirmation
    spends the previous step's code, so :func:`totp_code` offsets 0 and 1 are still fresh."""
    started = http.post("/auth/me/mfa/totp", headers=headers)
    assert started.status_code == 201, started.text
    secret = str(started.json()["secret"])
    confirmed = http.post(
        "/auth/me/mfa/totp/confirm", json={"code": totp_code(secret, -1)}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    return secret


def totp_code(secret: str, offset_steps: int = 0) -> str:
    """The TOTP code (RFC 6238: SHA-1, 6 digits, 30 s) of the base32 ``secret`` now, or
    ``offset_steps`` steps away (what an authenticator app shows)."""
    counter = int(time.time() // 30) + offset_steps
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def register_approval_key(
    http: httpx.Client, headers: dict[str, str], password: str, public_key_pem: str
) -> str:
    """Register ``public_key_pem`` as the signed-in user's approval key: enrols TOTP, then
    steps up with ``password`` and a fresh code. Returns the TOTP secret (offset 1 is the
    next fresh code)."""
    secret = enrol_totp(http, headers)
    registered = http.put(
        "/auth/me/approval-key",
        json={
            "public_key_pem": public_key_pem,
            "current_password": password,
            "totp_code": totp_code(secret),
        },
        headers=headers,
    )
    assert registered.status_code == 200, registered.text
    return secret


def audit_events(
    http: httpx.Client, headers: dict[str, str], **filters: str
) -> list[dict[str, Any]]:
    """Every audit event matching ``filters`` (all pages of ``GET /admin/audit-events``),
    oldest first."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {**filters, "limit": 200}
    while True:
        page = http.get("/admin/audit-events", params=params, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["items"])
        if not body["next_cursor"]:
            return sorted(items, key=lambda item: item["seq"])
        params["cursor"] = body["next_cursor"]


def stored_run_ids(http: httpx.Client, headers: dict[str, str], repository: str) -> set[int]:
    """GitHub run ids of every run of ``repository`` the pipeline has, read through its
    list API page by page (200 a page) with ``headers`` (a bearer token)."""
    found: set[int] = set()
    params: dict[str, Any] = {"repository": repository, "limit": 200}
    while True:
        page = http.get("/pipelines", params=params, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        found.update(run["run_id"] for run in body["items"])
        if not body["next_cursor"]:
            return found
        params["cursor"] = body["next_cursor"]


def wait_for_run_ids(
    http: httpx.Client,
    headers: dict[str, str],
    repository: str,
    expected: Iterable[int],
    within_seconds: float = 30.0,
) -> set[int]:
    """Every run id of ``repository`` (see :func:`stored_run_ids`), once all of ``expected``
    are among them. A webhook delivery is answered 202 when it is stored and mapped into
    its run behind that answer, so a test reads the runs of acknowledged deliveries through
    this bounded wait; AssertionError naming the missing run ids after ``within_seconds``.
    """
    wanted = set(expected)
    deadline = time.monotonic() + within_seconds
    while True:
        stored = stored_run_ids(http, headers, repository)
        missing = wanted - stored
        if not missing:
            return stored
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} acknowledged run(s) of {repository} not "
                f"stored within {within_seconds:g} s: {sorted(missing)[:20]}"
            )
        time.sleep(0.25)


def registration_request(reason: str) -> dict[str, str]:
    """A valid body for ``POST /admin/registration-requests`` with a fresh username."""
    return {
        "username": f"newcomer-{secrets.token_hex(4)}",
        "password": f"a-long-passphrase-{secrets.token_urlsafe(8)}",
        "reason": reason,
    }
