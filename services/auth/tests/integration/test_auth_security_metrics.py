"""Logins, lockouts, MFA and service tokens are counted in auth's ``/metrics``.

The counters are process-wide (every app of the test process shares them), so each test
reads ``/metrics`` before and after and checks the differences.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pyotp
from prometheus_client.parser import text_string_to_metric_families

from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any
ADMIN_PASSWORD = "correct-horse-battery-42"
WRONG_PASSWORD = "wrong-password-123"

LOGINS = "flightdeck_logins_total"
LOCKOUTS = "flightdeck_login_lockouts_total"
MFA_EVENTS = "flightdeck_mfa_events_total"
SERVICE_TOKENS = "flightdeck_service_tokens_total"
SECURITY_COUNTERS = {
    LOGINS: ("result", {"succeeded", "failed", "locked", "denied", "mfa_challenged", "mfa_failed"}),
    LOCKOUTS: ("scope", {"user", "ip"}),
    MFA_EVENTS: (
        "event",
        {"enrolment_started", "enabled", "disabled", "confirm_failed", "disable_failed"},
    ),
    SERVICE_TOKENS: ("result", {"issued", "denied"}),
}

Sample = tuple[str, str]  # (counter, label value)


async def security_counters(client: httpx.AsyncClient) -> dict[Sample, float]:
    """The security counters of the app's ``/metrics``, keyed by (name, label value)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    found: dict[Sample, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in SECURITY_COUNTERS:
                label, _ = SECURITY_COUNTERS[sample.name]
                found[(sample.name, sample.labels[label])] = sample.value
    return found


class Counted:
    """Differences of the security counters since construction (via :meth:`start`)."""

    def __init__(self, client: httpx.AsyncClient, before: dict[Sample, float]) -> None:
        self.client = client
        self.before = before

    @classmethod
    async def start(cls, client: httpx.AsyncClient) -> Counted:
        return cls(client, await security_counters(client))

    async def changes(self) -> Counter[Sample]:
        """Every counter that moved, with how much (unchanged ones are left out)."""
        after = await security_counters(self.client)
        moved = Counter({key: int(after[key] - self.before.get(key, 0.0)) for key in after})
        return +moved  # drops zeros


def wrong_code(secret: str, at: float) -> str:
    """A six-digit code that matches no step within the verification window."""
    totp = pyotp.TOTP(secret)
    valid = {totp.at(at + 30 * offset) for offset in (-2, -1, 0, 1, 2)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)


async def test_every_label_value_is_exported_before_any_event(auth: AuthHarness) -> None:
    counters = await security_counters(auth.client)
    for name, (_, values) in SECURITY_COUNTERS.items():
        assert {value for counter, value in counters if counter == name} == values, name


async def test_a_failed_and_a_successful_login_are_counted(auth: AuthHarness) -> None:
    counted = await Counted.start(auth.client)
    assert (await auth.login("admin", WRONG_PASSWORD)).status_code == 401
    assert (await auth.login("nobody", ADMIN_PASSWORD)).status_code == 401
    assert (await auth.login()).status_code == 200
    assert await counted.changes() == {(LOGINS, "failed"): 2, (LOGINS, "succeeded"): 1}


async def test_a_lockout_is_counted_with_its_scope(harness_factory: Any) -> None:
    auth: AuthHarness = await harness_factory(login_max_failures_per_user=2)
    counted = await Counted.start(auth.client)
    statuses = [(await auth.login("admin", WRONG_PASSWORD)).status_code for _ in range(2)]
    assert statuses == [401, 423]  # the second failure locks the username
    assert (await auth.login()).status_code == 423  # refused unchecked while locked
    assert await counted.changes() == {
        (LOGINS, "failed"): 2,
        (LOCKOUTS, "user"): 1,
        (LOGINS, "locked"): 1,
    }


async def test_mfa_enrolment_and_second_factor_logins_are_counted(auth: AuthHarness) -> None:
    headers = bearer((await auth.tokens())["access_token"])
    counted = await Counted.start(auth.client)
    secret = (await auth.client.post("/auth/me/mfa/totp", headers=headers)).json()["secret"]
    at = time.time()  # every code below is computed from this instant: no step race
    wrong = wrong_code(secret, at)
    refused = await auth.client.post(
        "/auth/me/mfa/totp/confirm", json={"code": wrong}, headers=headers
    )
    assert refused.status_code == 401
    confirmed = await auth.client.post(
        "/auth/me/mfa/totp/confirm", json={"code": auth.totp(secret, at=at)}, headers=headers
    )
    assert confirmed.status_code == 200
    assert await counted.changes() == {
        (MFA_EVENTS, "enrolment_started"): 1,
        (MFA_EVENTS, "confirm_failed"): 1,
        (MFA_EVENTS, "enabled"): 1,
    }

    counted = await Counted.start(auth.client)
    challenged = await auth.login()
    assert challenged.json()["code"] == "mfa_required"
    mfa_token = challenged.json()["mfa_token"]
    for code in (wrong, auth.totp(secret, at=at)):  # a wrong code, then the spent one
        answer = await auth.client.post(
            "/auth/login/mfa", json={"mfa_token": mfa_token, "code": code}
        )
        assert answer.status_code == 401
    done = await auth.client.post(
        "/auth/login/mfa", json={"mfa_token": mfa_token, "code": auth.totp(secret, 1, at=at)}
    )
    assert done.status_code == 200, done.text
    refused = await auth.client.request(
        "DELETE",
        "/auth/me/mfa/totp",
        json={"code": wrong},
        headers=bearer(done.json()["access_token"]),
    )
    assert refused.status_code == 401
    assert await counted.changes() == {
        (LOGINS, "mfa_challenged"): 1,
        (LOGINS, "mfa_failed"): 2,
        (LOGINS, "succeeded"): 1,
        (MFA_EVENTS, "disable_failed"): 1,
    }


async def test_mfa_removal_is_counted(auth: AuthHarness) -> None:
    headers = bearer((await auth.tokens())["access_token"])
    secret = (await auth.client.post("/auth/me/mfa/totp", headers=headers)).json()["secret"]
    at = time.time()
    confirmed = await auth.client.post(
        "/auth/me/mfa/totp/confirm", json={"code": auth.totp(secret, at=at)}, headers=headers
    )
    assert confirmed.status_code == 200
    counted = await Counted.start(auth.client)
    removed = await auth.client.request(
        "DELETE", "/auth/me/mfa/totp", json={"code": auth.totp(secret, 1, at=at)}, headers=headers
    )
    assert removed.status_code == 200, removed.text
    assert await counted.changes() == {(MFA_EVENTS, "disabled"): 1}


async def test_service_tokens_issued_and_denied_are_counted(auth: AuthHarness) -> None:
    counted = await Counted.start(auth.client)
    await auth.service_token()
    form = {
        "grant_type": "client_credentials",
        "client_id": "admin-service",
        "client_secret": "wrong-secret",
    }
    assert (await auth.client.post("/auth/service-token", data=form)).status_code == 401
    form = {
        **form,
        "client_secret": "service-secret-for-tests-0123456789",
        "scope": "flightdeck:admin-internal",
    }
    assert (await auth.client.post("/auth/service-token", data=form)).status_code == 400
    assert await counted.changes() == {(SERVICE_TOKENS, "issued"): 1, (SERVICE_TOKENS, "denied"): 2}


async def test_auth_reports_its_database_pool(auth: AuthHarness) -> None:
    text = (await auth.client.get("/metrics")).text
    pool = {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "flightdeck_db_pool_connections"
    }
    assert set(pool) == {"checked_out", "idle", "overflow"}
    assert "flightdeck_db_pool_size " in text
