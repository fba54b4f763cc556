"""Issue 15, items 5 and 6 at auth: the internal API's audiences by capability, admins
created only from a signed approval that auth verifies itself, and the step-up (password
and TOTP code) that registering an approval key or creating a service account needs."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from flightdeck_common.approval_signatures import approval_message
from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any
NEW_PASSWORD = "a-long-and-unusual-passphrase"


def _pem(key: ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def _new_user(auth: AuthHarness, token: str, username: str, role: str, **extra: Any) -> Any:
    return await auth.client.post(
        "/auth/internal/users",
        json={
            "username": username,
            "password_hash": await PasswordHasher().hash(NEW_PASSWORD),
            "role": role,
            **extra,
        },
        headers=bearer(token),
    )


async def test_pipeline_token_reads_revocations_but_cannot_administer_users(
    auth: AuthHarness,
) -> None:
    pipeline = await auth.pipeline_token()
    feed = await auth.client.get("/auth/internal/revocations", headers=bearer(pipeline))
    assert feed.status_code == 200, feed.text
    refused = await _new_user(auth, pipeline, "planted", "viewer")
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "missing_audience"
    assert refused.json()["required_audience"] == "flightdeck:auth-users"
    for path in ("/auth/internal/users", "/auth/internal/users/1/approval-key"):
        read = await auth.client.get(path, headers=bearer(pipeline))
        assert read.status_code == 403, (path, read.text)
    assert (await auth.login("planted", NEW_PASSWORD)).status_code == 401
    # The pipeline's account may not even ask for the user-administration audience.
    denied = await auth.client.post(
        "/auth/service-token",
        data={
            "grant_type": "client_credentials",
            "client_id": "pipeline-service",
            "client_secret": "pipeline-secret-for-tests-0123456789",
            "scope": "flightdeck:auth-users",
        },
    )
    assert denied.status_code == 400
    assert denied.json()["code"] == "invalid_scope"

    admin = await auth.service_token()
    made = await _new_user(auth, admin, "viewer-one", "viewer")
    assert made.status_code == 201, made.text
    assert (await auth.login("viewer-one", NEW_PASSWORD)).status_code == 200
    # A token for user administration alone does not read the revocation feed.
    users_only = await auth.service_token(scope="flightdeck:auth-users")
    feed = await auth.client.get("/auth/internal/revocations", headers=bearer(users_only))
    assert feed.status_code == 403


async def _approver(auth: AuthHarness) -> tuple[ed25519.Ed25519PrivateKey, dict[str, Any]]:
    """The bootstrap admin with TOTP and a registered approval key."""
    pair = await auth.tokens()
    headers = bearer(pair["access_token"])
    secret = await auth.enrol_totp(headers)
    key = ed25519.Ed25519PrivateKey.generate()
    registered = await auth.client.put(
        "/auth/me/approval-key",
        json={"public_key_pem": _pem(key), **auth.step_up(secret)},
        headers=headers,
    )
    assert registered.status_code == 200, registered.text
    return key, registered.json()


def _approval(
    key: ed25519.Ed25519PrivateKey,
    approver: dict[str, Any],
    *,
    username: str,
    role: str,
    request_id: int = 41,
    signed_role: str | None = None,
    signed_username: str | None = None,
    signed_at: str | None = None,
) -> dict[str, Any]:
    signed_at = signed_at or datetime.now(UTC).isoformat()
    message = approval_message(
        request_id, "approve", signed_role or role, signed_username or username, signed_at
    )
    return {
        "request_id": request_id,
        "decision": "approve",
        "role": role,
        "username": username,
        "signed_at": signed_at,
        "signature": base64.b64encode(key.sign(message)).decode(),
        "approver_id": approver["id"],
        "key_fingerprint": approver["approval_key_fingerprint"],
    }


async def test_a_service_token_cannot_create_an_admin_without_a_signed_approval(
    auth: AuthHarness,
) -> None:
    token = await auth.service_token()
    # The demonstrated attack: a service token makes an admin, which then logs in.
    refused = await _new_user(auth, token, "mallory", "admin")
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "signed_approval_required"
    assert (await auth.login("mallory", NEW_PASSWORD)).status_code == 401

    key, approver = await _approver(auth)
    forger = ed25519.Ed25519PrivateKey.generate()
    bad_approvals = {
        "signed by an unregistered key": _approval(
            forger, approver, username="mallory", role="admin"
        ),
        "signed for a viewer": _approval(
            key, approver, username="mallory", role="admin", signed_role="viewer"
        ),
        "signed for another username": _approval(
            key, approver, username="mallory", role="admin", signed_username="alice"
        ),
        "stale": _approval(
            key,
            approver,
            username="mallory",
            role="admin",
            signed_at=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        ),
        "another approver id": {
            **_approval(key, approver, username="mallory", role="admin"),
            "approver_id": 999,
        },
    }
    for case, approval in bad_approvals.items():
        answer = await _new_user(auth, token, "mallory", "admin", approval=approval)
        assert answer.status_code == 403, (case, answer.text)
        assert answer.json()["code"] == "invalid_signed_approval", case
    # An approval for another account does not fit this one either.
    other = _approval(key, approver, username="alice", role="admin")
    answer = await _new_user(auth, token, "mallory", "admin", approval=other)
    assert answer.status_code == 403
    assert (await auth.login("mallory", NEW_PASSWORD)).status_code == 401

    good = _approval(key, approver, username="alice", role="admin")
    made = await _new_user(auth, token, "alice", "admin", approval=good)
    assert made.status_code == 201, made.text
    assert made.json()["role"] == "admin"
    login = await auth.login("alice", NEW_PASSWORD)
    assert login.status_code == 200
    assert login.json()["user"]["role"] == "admin"
    assert "auth.user.created" in await auth.outbox_types()


async def test_setting_an_approval_key_needs_totp_enrolment(auth: AuthHarness) -> None:
    headers = bearer((await auth.tokens())["access_token"])
    key = ed25519.Ed25519PrivateKey.generate()
    response = await auth.client.put(
        "/auth/me/approval-key",
        json={
            "public_key_pem": _pem(key),
            "current_password": auth.admin_password,
            "totp_code": "123456",
        },
        headers=headers,
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "mfa_enrolment_required"
    assert "/auth/me/mfa/totp" in response.json()["detail"]
    # Without the step-up fields at all: a validation problem, not a stored key.
    bare = await auth.client.put(
        "/auth/me/approval-key", json={"public_key_pem": _pem(key)}, headers=headers
    )
    assert bare.status_code == 422
    me = await auth.client.get("/auth/me", headers=headers)
    assert me.json()["has_approval_key"] is False


@pytest.mark.parametrize("route", ["approval-key", "service-account"])
async def test_wrong_step_up_is_refused_and_counts_as_a_failed_login(
    harness_factory: Any, route: str
) -> None:
    auth: AuthHarness = await harness_factory(login_max_failures_per_user=2)
    headers = bearer((await auth.tokens())["access_token"])
    secret = await auth.enrol_totp(headers)
    key = ed25519.Ed25519PrivateKey.generate()

    async def attempt(step_up: dict[str, str]) -> Any:
        if route == "approval-key":
            return await auth.client.put(
                "/auth/me/approval-key",
                json={"public_key_pem": _pem(key), **step_up},
                headers=headers,
            )
        return await auth.client.post(
            "/auth/service-accounts",
            json={"client_id": "thief-bot", "audiences": ["flightdeck:auth-users"], **step_up},
            headers=headers,
        )

    # Each wrong factor counts against its own limit (password, code) for the user; the
    # answer never says which one was wrong.
    wrong = {"current_password": "not-the-password", "totp_code": "000000"}
    first = await attempt(wrong)
    assert first.status_code == 401, first.text
    assert first.json()["code"] == "step_up_failed"
    # The second failure reaches the per-user limit of 2: it answers as the lock it sets.
    second = await attempt(wrong)
    assert second.status_code == 423, second.text
    assert second.json()["code"] == "account_locked"
    # The lock holds at login and at step-up, even with the right password and code.
    assert (await auth.login()).status_code == 423
    assert (await attempt(auth.step_up(secret))).status_code == 423
    types = await auth.outbox_types()
    assert types.count("auth.user.step_up_failed") == 2
    me = await auth.client.get("/auth/me", headers=headers)
    assert me.json()["has_approval_key"] is False
    listed = await auth.client.get("/auth/service-accounts", headers=headers)
    assert "thief-bot" not in listed.text


async def test_right_step_up_is_accepted_once_per_code(auth: AuthHarness) -> None:
    headers = bearer((await auth.tokens())["access_token"])
    secret = await auth.enrol_totp(headers)
    step_up = auth.step_up(secret)
    created = await auth.client.post(
        "/auth/service-accounts",
        json={"client_id": "release-bot", "audiences": ["flightdeck:admin-internal"], **step_up},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    # The same code again is a replay: refused.
    replay = await auth.client.put(
        "/auth/me/approval-key",
        json={"public_key_pem": _pem(ed25519.Ed25519PrivateKey.generate()), **step_up},
        headers=headers,
    )
    assert replay.status_code == 401
    assert replay.json()["code"] == "step_up_failed"


async def test_a_service_token_grants_admin_only_on_an_admin_s_behalf(
    auth: AuthHarness,
) -> None:
    """Closing the other way to an admin: create a viewer, then promote it. The internal
    PATCH grants admin only with the acting admin's own access token."""
    service = await auth.service_token()
    made = await _new_user(auth, service, "climber", "viewer")
    assert made.status_code == 201, made.text
    path = f"/auth/internal/users/{made.json()['id']}"

    refused = await auth.client.patch(path, json={"role": "admin"}, headers=bearer(service))
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "acting_admin_required"
    viewer_token = (await auth.login("climber", NEW_PASSWORD)).json()["access_token"]
    for acting in (viewer_token, "not-a-token", service):  # a viewer, garbage, a service
        response = await auth.client.patch(
            path,
            json={"role": "admin"},
            headers={**bearer(service), "X-Flightdeck-Acting-User": acting},
        )
        assert response.status_code == 403, (acting[:12], response.text)
        assert response.json()["code"] == "acting_admin_required"
    listed = await auth.client.get(path, headers=bearer(service))
    assert listed.json()["role"] == "viewer"

    # Other changes need no acting admin; granting admin with one works and names them.
    demoted = await auth.client.patch(path, json={"role": "operator"}, headers=bearer(service))
    assert demoted.status_code == 200, demoted.text
    admin_token = (await auth.tokens())["access_token"]
    granted = await auth.client.patch(
        path,
        json={"role": "admin"},
        headers={**bearer(service), "X-Flightdeck-Acting-User": admin_token},
    )
    assert granted.status_code == 200, granted.text
    assert granted.json()["role"] == "admin"
    assert (await auth.login("climber", NEW_PASSWORD)).status_code == 200
