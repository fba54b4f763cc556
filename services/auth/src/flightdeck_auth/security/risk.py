"""The login risk policy: a pure function from what we know about a login to a decision.

Each signal adds its weight to a score; at ``challenge_at`` the login needs a second
factor, at ``deny_at`` it is refused. Thresholds are inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

RiskLevel = Literal["allow", "challenge", "deny"]


@dataclass(frozen=True, slots=True)
class RiskRules:
    """Weights and thresholds of the policy (hours are UTC; the range may wrap midnight).

    Off hours are ``off_hours_start <= hour < off_hours_end`` (or, when start > end,
    ``hour >= start or hour < end``); start == end disables the rule.
    """

    challenge_at: int = 40
    deny_at: int = 80
    recent_failure_weight: int = 15
    new_ip_weight: int = 30
    off_hours_weight: int = 20
    off_hours_start: int = 22
    off_hours_end: int = 6
    unknown_user_weight: int = 40

    def __post_init__(self) -> None:
        if not 0 <= self.off_hours_start <= 23 or not 0 <= self.off_hours_end <= 23:
            raise ValueError("off hours must be UTC hours between 0 and 23")
        if self.challenge_at > self.deny_at:
            raise ValueError("challenge_at must not exceed deny_at")


@dataclass(frozen=True, slots=True)
class LoginContext:
    """What is known about one login attempt.

    ``first_login`` means the user has no known IPs yet (their first login ever):
    then an unknown IP is not "new". ``ip`` is informational (logs, audit).
    ``unknown_user`` is for callers that assess attempts on usernames that do not
    exist; do not let the outcome differ visibly from a wrong password.
    """

    recent_failures: int
    ip: str
    known_ip: bool
    first_login: bool
    at: datetime
    unknown_user: bool = False


@dataclass(frozen=True, slots=True)
class RiskDecision:
    decision: RiskLevel
    score: int
    # Why, in order: "unknown_user", "recent_failures:<n>", "new_ip", "off_hours".
    reasons: list[str] = field(default_factory=list)


def is_off_hours(at: datetime, rules: RiskRules) -> bool:
    """Whether ``at`` (naive means UTC) falls in the off-hours range of ``rules``."""
    hour = (at if at.tzinfo is None else at.astimezone(UTC)).hour
    start, end = rules.off_hours_start, rules.off_hours_end
    if start == end:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def assess_login(ctx: LoginContext, rules: RiskRules | None = None) -> RiskDecision:
    """Score a login attempt and decide: allow, challenge (second factor) or deny."""
    rules = rules or RiskRules()
    score = 0
    reasons: list[str] = []
    if ctx.unknown_user:
        score += rules.unknown_user_weight
        reasons.append("unknown_user")
    if ctx.recent_failures > 0:
        score += ctx.recent_failures * rules.recent_failure_weight
        reasons.append(f"recent_failures:{ctx.recent_failures}")
    if not ctx.known_ip and not ctx.first_login:
        score += rules.new_ip_weight
        reasons.append("new_ip")
    if is_off_hours(ctx.at, rules):
        score += rules.off_hours_weight
        reasons.append("off_hours")
    decision: RiskLevel
    if score >= rules.deny_at:
        decision = "deny"
    elif score >= rules.challenge_at:
        decision = "challenge"
    else:
        decision = "allow"
    return RiskDecision(decision=decision, score=score, reasons=reasons)
