"""Password login, lockout, MFA, refresh rotation and logout against a real database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any
ADMIN_PASSWORD = "correct-horse-battery-42"


async def test_login_success_returns_a_working_token_pair(auth: AuthHarness) -> None:
    body = await auth.tokens()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["user"]["username"] == "admin"
    assert body["user"]["role"] == "admin"
    me = await auth.client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "admin"
    assert "auth.login.succeeded" in await auth.outbox_types()


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "wrong-password-123"), ("nobody", ADMIN_PASSWORD), ("ADMIN ", "nope-nope-nope")],
)
async def test_bad_credentials_are_one_generic_401(
    auth: AuthHarness, username: str, password: str
) -> None:
    response = await auth.login(username, password)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_credentials"
    assert "auth.login.failed" in await auth.outbox_types()


async def test_username_is_normalized(auth: AuthHarness) -> None:
    assert (await auth.login("  Admin ", ADMIN_PASSWORD)).status_code == 200


async def test_lockout_after_failures_then_expiry(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(
        login_max_failures_per_user=3, login_base_lock_seconds=1
    )
    statuses = [(await auth.login("admin", "wrong-password-123")).status_code for _ in range(3)]
    assert statuses == [401, 401, 423]
    locked = await auth.login("admin", ADMIN_PASSWORD)  # even the right password waits
    assert locked.status_code == 423
    assert locked.json()["code"] == "account_locked"
    assert 1 <= int(locked.headers["retry-after"]) <= 2
    assert "auth.login.locked" in await auth.outbox_types()
    await asyncio.sleep(1.2)
    assert (await auth.login("admin", ADMIN_PASSWORD)).status_code == 200


async def test_login_route_is_rate_limited(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(rate_limit_login="3/minute")
    statuses = [(await auth.login("admin", "x" * 12)).status_code for _ in range(4)]
    assert statuses[-1] == 429


async def test_mfa_enrolment_and_login_with_totp(auth: AuthHarness) -> None:
    first = await auth.tokens()
    headers = bearer(first["access_token"])
    enrol = await auth.client.post("/auth/me/mfa/totp", headers=headers)
    assert enrol.status_code == 201
    secret = enrol.json()["secret"]
    assert enrol.json()["otpauth_uri"].startswith("otpauth://totp/")
    wrong = await auth.client.post(
        "/auth/me/mfa/totp/confirm", json={"code": "000000"}, headers=headers
    )
    assert wrong.status_code == 401
    confirmed_at = time.time()  # codes below are computed from this instant: no step race
    confirm = await auth.client.post(
        "/auth/me/mfa/totp/confirm",
        json={"code": auth.totp(secret, at=confirmed_at)},
        headers=headers,
    )
    assert confirm.status_code == 200
    assert confirm.json()["mfa_enabled"] is True

    challenged = await auth.login()
    assert challenged.status_code == 401
    assert challenged.json()["code"] == "mfa_required"
    mfa_token = challenged.json()["mfa_token"]
    # The code used to confirm (same time step) cannot be replayed.
    replay = await auth.client.post(
        "/auth/login/mfa", json={"mfa_token": mfa_token, "code": auth.totp(secret, at=confirmed_at)}
    )
    assert replay.status_code == 401
    done = await auth.client.post(
        "/auth/login/mfa",
        json={"mfa_token": mfa_token, "code": auth.totp(secret, 1, at=confirmed_at)},
    )
    assert done.status_code == 200, done.text
    assert done.json()["user"]["mfa_enabled"] is True
    # The mfa_token is single-use, and so is the code.
    again = await auth.client.post(
        "/auth/login/mfa",
        json={"mfa_token": mfa_token, "code": auth.totp(secret, 1, at=confirmed_at)},
    )
    assert again.status_code == 401
    types = await auth.outbox_types()
    assert {"auth.mfa.enabled", "auth.login.mfa_challenged", "auth.login.succeeded"} <= set(types)


async def test_refresh_rotates_and_reuse_revokes_the_family(auth: AuthHarness) -> None:
    first = await auth.tokens()
    second = await auth.client.post(
        "/auth/token/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    third = await auth.client.post(
        "/auth/token/refresh", json={"refresh_token": second.json()["refresh_token"]}
    )
    assert third.status_code == 200
    # The first token comes back: reuse. The whole family, including the newest, dies.
    reuse = await auth.client.post(
        "/auth/token/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 401
    assert "reuse" in reuse.json()["detail"]
    newest = await auth.client.post(
        "/auth/token/refresh", json={"refresh_token": third.json()["refresh_token"]}
    )
    assert newest.status_code == 401
    assert "auth.refresh_token.reuse_detected" in await auth.outbox_types()


async def test_concurrent_refresh_with_one_token_succeeds_once(auth: AuthHarness) -> None:
    first = await auth.tokens()
    responses = await asyncio.gather(
        *(
            auth.client.post("/auth/token/refresh", json={"refresh_token": first["refresh_token"]})
            for _ in range(3)
        )
    )
    assert sorted(r.status_code for r in responses).count(200) <= 1


async def test_logout_revokes_access_and_refresh(auth: AuthHarness) -> None:
    pair = await auth.tokens()
    headers = bearer(pair["access_token"])
    out = await auth.client.post(
        "/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=headers
    )
    assert out.status_code == 204
    me = await auth.client.get("/auth/me", headers=headers)
    assert me.status_code == 401
    assert me.json()["code"] == "token_revoked"
    refreshed = await auth.client.post(
        "/auth/token/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 401
    # Another session of the same user is untouched.
    other = await auth.tokens()
    assert (
        await auth.client.get("/auth/me", headers=bearer(other["access_token"]))
    ).status_code == 200


async def test_mfa_required_roles_confine_tokens_until_enrolment(harness_factory: Any) -> None:
    import jwt

    auth: AuthHarness = await harness_factory(mfa_required_roles="admin")
    pair = await auth.tokens()
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["mfa_enrolment_required"] is True
    headers = bearer(pair["access_token"])
    assert (await auth.client.get("/auth/me", headers=headers)).status_code == 200
    secret = (await auth.client.post("/auth/me/mfa/totp", headers=headers)).json()["secret"]
    confirmed_at = time.time()
    await auth.client.post(
        "/auth/me/mfa/totp/confirm",
        json={"code": auth.totp(secret, at=confirmed_at)},
        headers=headers,
    )
    token = (await auth.login()).json()["mfa_token"]
    done = await auth.client.post(
        "/auth/login/mfa", json={"mfa_token": token, "code": auth.totp(secret, 1, at=confirmed_at)}
    )
    claims = jwt.decode(done.json()["access_token"], options={"verify_signature": False})
    assert "mfa_enrolment_required" not in claims
