"""Prometheus counters of auth's security decisions (incremented next to their audit events).

Every label value is created at import, so each series is exported (at 0) before its
first event and ``rate()``/``increase()`` see the first one.
"""

from __future__ import annotations

from typing import Literal, get_args

from flightdeck_auth.security.throttle import LockScope
from flightdeck_common.metrics import counter

LoginResult = Literal["succeeded", "failed", "locked", "denied", "mfa_challenged", "mfa_failed"]
MfaEvent = Literal["enrolment_started", "enabled", "disabled", "confirm_failed", "disable_failed"]
ServiceTokenResult = Literal["issued", "denied"]

LOGINS = counter(
    "flightdeck_logins_total",
    "Login attempts by result: succeeded (tokens issued, with or without TOTP), failed "
    "(wrong password or unknown user, including the failure that locks), locked (refused "
    "unchecked: username or IP locked), denied (risk policy), mfa_challenged (password "
    "right, TOTP due), mfa_failed (wrong or reused TOTP code).",
    ("result",),
)
LOGIN_LOCKOUTS = counter(
    "flightdeck_login_lockouts_total",
    "Locks imposed by a failed login, by the scope that locked (user or ip).",
    ("scope",),
)
MFA_EVENTS_TOTAL = counter(
    "flightdeck_mfa_events_total",
    "TOTP enrolment, confirmation and removal events (as audited).",
    ("event",),
)
SERVICE_TOKENS = counter(
    "flightdeck_service_tokens_total",
    "Client-credential requests: issued, or denied (unknown client, wrong secret, "
    "audience not allowed).",
    ("result",),
)

for _result in get_args(LoginResult):
    LOGINS.labels(result=_result)
for _scope in get_args(LockScope):
    LOGIN_LOCKOUTS.labels(scope=_scope)
for _event in get_args(MfaEvent):
    MFA_EVENTS_TOTAL.labels(event=_event)
for _token_result in get_args(ServiceTokenResult):
    SERVICE_TOKENS.labels(result=_token_result)


def count_login(result: LoginResult) -> None:
    LOGINS.labels(result=result).inc()


def count_lockout(scope: LockScope) -> None:
    LOGIN_LOCKOUTS.labels(scope=scope).inc()


def count_mfa_event(event: MfaEvent) -> None:
    MFA_EVENTS_TOTAL.labels(event=event).inc()


def count_service_token(result: ServiceTokenResult) -> None:
    SERVICE_TOKENS.labels(result=result).inc()
