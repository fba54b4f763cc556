"""TOTP enrolment, confirmation and removal."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.exceptions import (
    InvalidMfaCode,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaNotPending,
)
from flightdeck_auth.login.attempts import fail_attempt, reserve_second_factor_attempt
from flightdeck_auth.metrics import count_mfa_event
from flightdeck_auth.mfa.schemas import TotpEnrolment
from flightdeck_auth.outbox import audit
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.totp import new_totp_secret, provisioning_uri, verify_totp
from flightdeck_auth.security.totp_secrets import open_totp_secret, seal_totp_secret
from flightdeck_auth.users.models import User
from flightdeck_auth.users.repository import UserRepository
from flightdeck_common.db import utcnow


async def start_enrolment(session: AsyncSession, rt: AuthRuntime, user: User) -> TotpEnrolment:
    if user.mfa_enabled:
        raise MfaAlreadyEnabled("Disable TOTP first to enrol a new device.")
    secret = new_totp_secret()
    user.totp_secret = seal_totp_secret(rt.box, user.id, secret)
    user.totp_last_counter = None
    await audit(session, "mfa.enrolment_started", actor=user.username, subject=str(user.id))
    count_mfa_event("enrolment_started")
    return TotpEnrolment(secret=secret, otpauth_uri=provisioning_uri(secret, user.username))


async def confirm_enrolment(
    session: AsyncSession, rt: AuthRuntime, user: User, code: str, ip: str
) -> None:
    if user.mfa_enabled:
        raise MfaAlreadyEnabled()
    if user.totp_secret is None:
        raise MfaNotPending()
    # Wrong codes count like wrong codes at login (per user and address, doubling lock).
    attempt = await reserve_second_factor_attempt(session, rt, user, ip)
    counter = verify_totp(
        open_totp_secret(rt.box, user.id, user.totp_secret), code, last_used_counter=None
    )
    if counter is None:
        await audit(session, "mfa.confirm_failed", actor=user.username, subject=str(user.id))
        count_mfa_event("confirm_failed")
        raise await fail_attempt(session, rt, attempt, InvalidMfaCode(), actor=user.username, ip=ip)
    await rt.throttle.succeeded(attempt)
    user.totp_confirmed_at = utcnow()
    user.totp_last_counter = counter
    await audit(session, "mfa.enabled", actor=user.username, subject=str(user.id))
    count_mfa_event("enabled")


async def disable(session: AsyncSession, rt: AuthRuntime, user: User, code: str, ip: str) -> None:
    if not user.mfa_enabled or user.totp_secret is None:
        raise MfaNotEnabled()
    attempt = await reserve_second_factor_attempt(session, rt, user, ip)
    counter = verify_totp(
        open_totp_secret(rt.box, user.id, user.totp_secret),
        code,
        last_used_counter=user.totp_last_counter,
    )
    if counter is None or not await UserRepository(session).advance_totp_counter(user, counter):
        await audit(session, "mfa.disable_failed", actor=user.username, subject=str(user.id))
        count_mfa_event("disable_failed")
        raise await fail_attempt(session, rt, attempt, InvalidMfaCode(), actor=user.username, ip=ip)
    await rt.throttle.succeeded(attempt)
    user.totp_secret = None
    user.totp_confirmed_at = None
    user.totp_last_counter = None
    await audit(session, "mfa.disabled", actor=user.username, subject=str(user.id))
    count_mfa_event("disabled")
