"""The login risk policy: each signal, the thresholds and the off-hours range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from flightdeck_auth.security.risk import (
    LoginContext,
    RiskRules,
    assess_login,
    is_off_hours,
)

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RULES = RiskRules()


def context(**overrides: Any) -> LoginContext:
    values: dict[str, Any] = {
        "recent_failures": 0,
        "ip": "203.0.113.7",
        "known_ip": True,
        "first_login": False,
        "at": NOON,
    }
    values.update(overrides)
    return LoginContext(**values)


def at_utc(hour: int, minute: int = 0) -> datetime:
    return NOON.replace(hour=hour, minute=minute)


def test_usual_login_is_allowed() -> None:
    decision = assess_login(context(), RULES)
    assert decision.decision == "allow"
    assert decision.score == 0
    assert decision.reasons == []


def test_rules_default_when_omitted() -> None:
    assert assess_login(context(known_ip=False)) == assess_login(context(known_ip=False), RULES)


def test_new_ip() -> None:
    decision = assess_login(context(known_ip=False), RULES)
    assert decision.score == 30
    assert decision.reasons == ["new_ip"]
    assert decision.decision == "allow"


def test_first_login_is_not_a_new_ip() -> None:
    decision = assess_login(context(known_ip=False, first_login=True), RULES)
    assert decision.score == 0
    assert decision.reasons == []


@pytest.mark.parametrize(
    ("failures", "score", "verdict"),
    [
        (1, 15, "allow"),
        (2, 30, "allow"),
        (3, 45, "challenge"),
        (5, 75, "challenge"),
        (6, 90, "deny"),
    ],
)
def test_recent_failures(failures: int, score: int, verdict: str) -> None:
    decision = assess_login(context(recent_failures=failures), RULES)
    assert decision.score == score
    assert decision.decision == verdict
    assert decision.reasons == [f"recent_failures:{failures}"]


def test_off_hours_adds_weight() -> None:
    decision = assess_login(context(at=at_utc(23)), RULES)
    assert decision.score == 20
    assert decision.reasons == ["off_hours"]


@pytest.mark.parametrize(
    ("hour", "minute", "off"),
    [
        (21, 59, False),
        (22, 0, True),
        (23, 59, True),
        (0, 0, True),
        (5, 59, True),
        (6, 0, False),
        (12, 0, False),
    ],
)
def test_off_hours_range_wraps_midnight(hour: int, minute: int, off: bool) -> None:
    assert is_off_hours(at_utc(hour, minute), RULES) is off


@pytest.mark.parametrize(("hour", "off"), [(0, False), (1, True), (4, True), (5, False)])
def test_off_hours_range_without_wrap(hour: int, off: bool) -> None:
    assert is_off_hours(at_utc(hour), RiskRules(off_hours_start=1, off_hours_end=5)) is off


def test_equal_start_and_end_disable_off_hours() -> None:
    rules = RiskRules(off_hours_start=3, off_hours_end=3)
    assert not any(is_off_hours(at_utc(hour), rules) for hour in range(24))


def test_hours_are_utc() -> None:
    # 23:30 in UTC+2 is 21:30 UTC: not off hours. 01:00 in UTC-5 is 06:00 UTC: not either.
    assert not is_off_hours(
        datetime(2026, 11, 25, 23, 30, tzinfo=timezone(timedelta(hours=2))), RULES
    )
    assert not is_off_hours(
        datetime(2026, 11, 25, 1, 0, tzinfo=timezone(timedelta(hours=-5))), RULES
    )
    # 08:00 in UTC+10 is 22:00 UTC: off hours.
    assert is_off_hours(datetime(2026, 11, 25, 8, 0, tzinfo=timezone(timedelta(hours=10))), RULES)
    # Naive datetimes are taken as UTC.
    assert is_off_hours(datetime(2026, 11, 25, 23, 0), RULES)


def test_signals_add_up_in_a_stable_order() -> None:
    decision = assess_login(context(known_ip=False, at=at_utc(2)), RULES)
    assert decision.score == 50
    assert decision.decision == "challenge"
    assert decision.reasons == ["new_ip", "off_hours"]
    worst = assess_login(context(recent_failures=2, known_ip=False, at=at_utc(2)), RULES)
    assert worst.score == 80
    assert worst.decision == "deny"
    assert worst.reasons == ["recent_failures:2", "new_ip", "off_hours"]


def test_thresholds_are_inclusive() -> None:
    rules = RiskRules(challenge_at=30, deny_at=60, recent_failure_weight=10)
    assert assess_login(context(recent_failures=2), rules).decision == "allow"  # 20
    assert assess_login(context(recent_failures=3), rules).decision == "challenge"  # 30
    assert assess_login(context(recent_failures=5), rules).decision == "challenge"  # 50
    assert assess_login(context(recent_failures=6), rules).decision == "deny"  # 60


def test_challenge_just_below_and_at_the_default_threshold() -> None:
    # new_ip (30) alone is allowed; new_ip + one failure (45) crosses challenge_at=40.
    assert assess_login(context(known_ip=False), RULES).decision == "allow"
    assert assess_login(context(known_ip=False, recent_failures=1), RULES).decision == "challenge"
    exact = RiskRules(new_ip_weight=40)
    assert assess_login(context(known_ip=False), exact).decision == "challenge"
    assert assess_login(context(known_ip=False), RiskRules(new_ip_weight=39)).decision == "allow"


def test_unknown_user() -> None:
    decision = assess_login(context(unknown_user=True), RULES)
    assert decision.reasons == ["unknown_user"]
    assert decision.score == RULES.unknown_user_weight
    assert decision.decision == "challenge"


def test_zero_weights_disable_rules() -> None:
    rules = RiskRules(new_ip_weight=0, off_hours_weight=0, recent_failure_weight=0)
    decision = assess_login(context(known_ip=False, at=at_utc(23), recent_failures=9), rules)
    assert decision.score == 0
    assert decision.decision == "allow"


@pytest.mark.parametrize(
    "bad",
    [
        {"off_hours_start": 24},
        {"off_hours_end": -1},
        {"challenge_at": 90, "deny_at": 80},
    ],
)
def test_invalid_rules_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"off hours|challenge_at"):
        RiskRules(**bad)
