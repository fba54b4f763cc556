"""Throttling of every check of a password or a second factor, with real concurrency, on
SQLite (in-process counters) and on PostgreSQL with Redis.

Each test sends many requests at once (``asyncio.gather``) through the app: the counters
must bound how many guesses are checked, not merely how many are answered.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from flightdeck_auth.exceptions import AccountLocked, InvalidCredentials, InvalidMfaCode
from flightdeck_auth.login.attempts import check_current_password, check_second_factor
from flightdeck_auth.mfa.repository import MfaChallengeRepository
from flightdeck_auth.users.models import User
from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any
ADMIN_PASSWORD = "correct-horse-battery-42"
WRONG_PASSWORD = "wrong-password-123"
WRONG_CODE = "000000"


def count_verifications(auth: AuthHarness) -> list[int]:
    """Count the argon2 verifications the app runs (the real hasher still does the work)."""
    hasher = auth.app.state.auth_runtime.hasher
    real_verify = hasher.verify
    calls = [0]

    async def verify(password_hash: str, password: str) -> bool:
        calls[0] += 1
        result: bool = await real_verify(password_hash, password)
        return result

    hasher.verify = verify
    return calls


def codes(responses: list[Any]) -> Counter[tuple[int, str]]:
    return Counter((r.status_code, r.json().get("code", "")) for r in responses)


def comparable(problem: dict[str, Any]) -> dict[str, Any]:
    """A problem body without what differs between any two requests."""
    return {k: v for k, v in problem.items() if k not in {"instance", "request_id"}}


async def enrol_totp(auth: AuthHarness) -> tuple[str, dict[str, str], float]:
    """Enrol TOTP for admin; (secret, headers of a session, the instant codes derive from)."""
    headers = bearer((await auth.tokens())["access_token"])
    secret = (await auth.client.post("/auth/me/mfa/totp", headers=headers)).json()["secret"]
    at = time.time()
    confirmed = await auth.client.post(
        "/auth/me/mfa/totp/confirm", json={"code": auth.totp(secret, at=at)}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    return secret, headers, at


async def mfa_token(auth: AuthHarness) -> str:
    challenged = await auth.login()
    assert challenged.json()["code"] == "mfa_required", challenged.text
    return str(challenged.json()["mfa_token"])


async def test_parallel_wrong_passwords_verify_no_more_than_the_limit(
    harness_factory: Any,
) -> None:
    auth: AuthHarness = await harness_factory(
        login_max_failures_per_user=5, login_max_failures_per_ip=1000
    )
    verified = count_verifications(auth)
    answers = await asyncio.gather(*(auth.login("admin", WRONG_PASSWORD) for _ in range(40)))
    assert verified[0] <= 5
    # The fifth failure locks; everything else was refused unchecked.
    assert codes(list(answers)) == {
        (401, "invalid_credentials"): verified[0] - 1,
        (423, "account_locked"): 40 - verified[0] + 1,
    }
    assert (await auth.login()).status_code == 423  # the lock is real


async def test_parallel_logins_with_the_right_password_all_succeed(
    harness_factory: Any,
) -> None:
    auth: AuthHarness = await harness_factory(login_max_failures_per_user=3)
    answers = await asyncio.gather(*(auth.login() for _ in range(12)))
    assert [a.status_code for a in answers] == [200] * 12


async def test_parallel_logins_in_flight_do_not_count_as_recent_failures(
    harness_factory: Any,
) -> None:
    """The risk policy reads failures that were checked and failed: reservations of
    concurrent right-password logins (a CI fleet sharing one account) are not failures,
    or the policy would deny the right password (measured: a 32-connection login bench
    got 423s)."""
    auth: AuthHarness = await harness_factory(
        login_max_failures_per_user=5, risk_challenge_at=30, risk_deny_at=45
    )
    answers = await asyncio.gather(*(auth.login() for _ in range(24)))
    assert [a.status_code for a in answers] == [200] * 24
    # Checked failures still count: three wrong passwords (45) deny the right one.
    for _ in range(3):
        assert (await auth.login("admin", WRONG_PASSWORD)).status_code == 401
    assert (await auth.login()).status_code == 401


async def test_a_right_password_refunds_its_reservation(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(login_max_failures_per_user=3)
    for _ in range(2):
        assert (await auth.login("admin", WRONG_PASSWORD)).status_code == 401
    assert (await auth.login()).status_code == 200  # clears the two failures
    statuses = [(await auth.login("admin", WRONG_PASSWORD)).status_code for _ in range(3)]
    assert statuses == [401, 401, 423]


async def test_a_risk_denial_looks_and_counts_like_a_wrong_password(
    harness_factory: Any,
) -> None:
    # Three recent failures (15 each) reach deny_at: the right password is then refused.
    auth: AuthHarness = await harness_factory(
        login_max_failures_per_user=5, risk_challenge_at=30, risk_deny_at=45
    )
    wrong = [await auth.login("admin", WRONG_PASSWORD) for _ in range(3)]
    denied = await auth.login()
    assert denied.status_code == wrong[-1].status_code == 401
    assert denied.headers["content-type"] == wrong[-1].headers["content-type"]
    assert comparable(denied.json()) == comparable(wrong[-1].json())
    # It counted: the fifth attempt (wrong or right) locks.
    assert (await auth.login()).status_code == 423
    assert await auth.app.state.auth_runtime.throttle.failures("admin") == 5


async def test_concurrent_wrong_codes_on_one_mfa_token_are_counted_exactly(
    harness_factory: Any,
) -> None:
    auth: AuthHarness = await harness_factory(
        mfa_max_attempts=5, login_max_failures_per_user=100, login_max_failures_per_ip=1000
    )
    await enrol_totp(auth)
    token = await mfa_token(auth)
    answers = await asyncio.gather(
        *(
            auth.client.post("/auth/login/mfa", json={"mfa_token": token, "code": WRONG_CODE})
            for _ in range(30)
        )
    )
    assert codes(list(answers)) == {
        (401, "invalid_mfa_code"): 5,  # evaluated
        (401, "invalid_mfa_token"): 25,  # refused: the token is out of attempts
    }
    async with auth.app.state.resources.sessionmaker() as session:
        assert await MfaChallengeRepository(session).attempts(token) == 5


async def test_wrong_codes_lock_the_user_across_challenges(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(
        mfa_max_attempts=5, login_max_failures_per_user=3, login_base_lock_seconds=60
    )
    secret, _, at = await enrol_totp(auth)
    statuses = []
    # A fresh mfa_token per wrong code: each challenge has attempts left, the user not.
    for _ in range(3):
        token = await mfa_token(auth)  # the right password does not clear wrong codes
        answer = await auth.client.post(
            "/auth/login/mfa", json={"mfa_token": token, "code": WRONG_CODE}
        )
        statuses.append(answer.status_code)
    assert statuses == [401, 401, 423]
    token = await mfa_token(auth)
    locked = await auth.client.post(
        "/auth/login/mfa", json={"mfa_token": token, "code": auth.totp(secret, 1, at=at)}
    )
    assert locked.status_code == 423  # even the right code waits
    assert locked.json()["code"] == "account_locked"
    assert int(locked.headers["retry-after"]) >= 1


async def test_parallel_wrong_codes_on_many_tokens_are_bounded_per_user(
    harness_factory: Any,
) -> None:
    auth: AuthHarness = await harness_factory(
        mfa_max_attempts=5, login_max_failures_per_user=5, login_max_failures_per_ip=1000
    )
    await enrol_totp(auth)
    tokens = [await mfa_token(auth) for _ in range(8)]
    answers = await asyncio.gather(
        *(
            auth.client.post("/auth/login/mfa", json={"mfa_token": token, "code": WRONG_CODE})
            for token in tokens
            for _ in range(5)
        )
    )
    counted = codes(list(answers))
    assert counted[(401, "invalid_mfa_code")] + counted[(423, "account_locked")] == 40
    assert counted[(401, "invalid_mfa_code")] <= 4  # the fifth wrong code locks
    assert await auth.app.state.auth_runtime.throttle.second_factor_failures(1) == 5


async def test_wrong_codes_count_per_address_across_users(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(
        login_max_failures_per_user=100, login_max_failures_per_ip=2
    )
    await enrol_totp(auth)
    throttle = auth.app.state.auth_runtime.throttle
    # Another user's wrong code from this address (the step-up entry point) counts too.
    assert await throttle.record_second_factor_failure(999, "127.0.0.1") is None
    token = await mfa_token(auth)
    answer = await auth.client.post(
        "/auth/login/mfa", json={"mfa_token": token, "code": WRONG_CODE}
    )
    assert answer.status_code == 423
    assert "ip" in answer.json()["detail"]


async def test_wrong_current_passwords_count_as_failed_logins(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(login_max_failures_per_user=3)
    headers = bearer((await auth.tokens())["access_token"])
    verified = count_verifications(auth)
    body = {"current_password": WRONG_PASSWORD, "new_password": "another-long-passphrase-7"}
    answers = await asyncio.gather(
        *(auth.client.post("/auth/me/password", json=body, headers=headers) for _ in range(10))
    )
    assert verified[0] <= 3
    assert codes(list(answers))[(423, "account_locked")] >= 8
    assert (await auth.login()).status_code == 423  # the login is locked as well


async def test_wrong_codes_to_confirm_enrolment_are_throttled(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(login_max_failures_per_user=3)
    headers = bearer((await auth.tokens())["access_token"])
    secret = (await auth.client.post("/auth/me/mfa/totp", headers=headers)).json()["secret"]
    answers = await asyncio.gather(
        *(
            auth.client.post(
                "/auth/me/mfa/totp/confirm", json={"code": WRONG_CODE}, headers=headers
            )
            for _ in range(10)
        )
    )
    counted = codes(list(answers))
    assert counted[(401, "invalid_mfa_code")] <= 2
    assert counted[(423, "account_locked")] >= 8
    right = await auth.client.post(
        "/auth/me/mfa/totp/confirm", json={"code": auth.totp(secret)}, headers=headers
    )
    assert right.status_code == 423


async def test_wrong_codes_to_turn_totp_off_are_throttled(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(login_max_failures_per_user=3)
    secret, headers, at = await enrol_totp(auth)
    answers = await asyncio.gather(
        *(
            auth.client.request(
                "DELETE", "/auth/me/mfa/totp", json={"code": WRONG_CODE}, headers=headers
            )
            for _ in range(10)
        )
    )
    counted = codes(list(answers))
    assert counted[(401, "invalid_mfa_code")] <= 2
    assert counted[(423, "account_locked")] >= 8
    right = await auth.client.request(
        "DELETE", "/auth/me/mfa/totp", json={"code": auth.totp(secret, 1, at=at)}, headers=headers
    )
    assert right.status_code == 423
    # The second-factor lock does not stop a password login, nor does that login clear it.
    assert (await auth.login()).json()["code"] == "mfa_required"
    assert await auth.app.state.auth_runtime.throttle.second_factor_failures(1) == 3


async def test_the_default_limit_applies_to_signed_in_routes_only(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(rate_limit_default="3/minute")
    headers = bearer((await auth.tokens())["access_token"])
    service = {"Authorization": f"Bearer {await auth.service_token()}"}
    me = [(await auth.client.get("/auth/me", headers=headers)).status_code for _ in range(4)]
    assert me == [200, 200, 200, 429]
    # The address is over the default limit for every route under it, whatever the token.
    body = {"current_password": WRONG_PASSWORD, "new_password": "another-long-passphrase-7"}
    refused = await auth.client.post("/auth/me/password", json=body, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    listed = await auth.client.get("/auth/service-accounts", headers=headers)
    assert listed.status_code == 429
    # Probes, metrics, the JWKS and the internal API are never under it.
    for path, extra in [
        ("/healthz", {}),
        ("/readyz", {}),
        ("/metrics", {}),
        ("/auth/.well-known/jwks.json", {}),
        ("/auth/internal/users/1", service),
    ]:
        statuses = {(await auth.client.get(path, headers=extra)).status_code for _ in range(5)}
        assert statuses == {200}, path


async def test_step_up_checks_share_the_throttle(harness_factory: Any) -> None:
    """The domain functions other routes use for a password or a code (step-up checks)."""
    auth: AuthHarness = await harness_factory(login_max_failures_per_user=2)
    secret, _, at = await enrol_totp(auth)
    rt = auth.app.state.auth_runtime
    results: list[str] = []
    for code in (WRONG_CODE, WRONG_CODE, auth.totp(secret, 1, at=at)):
        async with auth.app.state.resources.sessionmaker() as session:
            user = await session.get(User, 1)
            assert user is not None
            try:
                await check_second_factor(session, rt, user, secret, code, "203.0.113.9")
                results.append("ok")
            except (InvalidMfaCode, AccountLocked) as exc:
                results.append(exc.code)
    assert results == ["invalid_mfa_code", "account_locked", "account_locked"]
    async with auth.app.state.resources.sessionmaker() as session:
        user = await session.get(User, 1)
        assert user is not None
        for password in (WRONG_PASSWORD, ADMIN_PASSWORD):
            try:
                await check_current_password(session, rt, user, password, "203.0.113.9")
                results.append("ok")
            except (InvalidCredentials, AccountLocked) as exc:
                results.append(exc.code)
    assert results[3:] == ["invalid_credentials", "ok"]  # passwords count apart
