"""Step-up: the current password AND a fresh TOTP code, for changes a stolen session must
not make on its own (registering an approval key, creating a service account).

A wrong password or code answers 401 ``step_up_failed`` (without saying which); each wrong
factor counts as a failed check of that factor for the user and the client address, with
the login's doubling locks (``login.attempts``); while either is locked, 423. A user without TOTP gets 403 ``mfa_enrolment_required``: enrol first.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.exceptions import AccountLocked
from flightdeck_auth.login.attempts import (
    fail_attempts,
    reserve_password_attempt,
    reserve_second_factor_attempt,
)
from flightdeck_auth.outbox import audit
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.totp import verify_totp
from flightdeck_auth.security.totp_secrets import open_totp_secret
from flightdeck_auth.users.models import User
from flightdeck_auth.users.repository import UserRepository
from flightdeck_common.auth.errors import MfaEnrolmentRequired
from flightdeck_common.errors import Unauthorized


class StepUpFailed(Unauthorized):
    code = "step_up_failed"
    title = "The current password or the TOTP code is wrong"


class StepUp(BaseModel):
    """The fields a step-up request carries besides its own."""

    current_password: str = Field(min_length=1, max_length=1024)
    totp_code: str = Field(
        min_length=1, max_length=16, description="A current code of your authenticator app."
    )


STEP_UP_ERRORS = (StepUpFailed, AccountLocked, MfaEnrolmentRequired)


async def require_step_up(
    session: AsyncSession, rt: AuthRuntime, user: User, step_up: StepUp, *, ip: str, purpose: str
) -> None:
    """Return when ``step_up`` proves ``user`` is at the keyboard; raise otherwise.

    Both factors are reserved with the login throttle before either is checked (423 while
    the user or address is locked for either), both are checked whatever the other gave,
    and each wrong one counts as a failure of its factor (``login.attempts``)."""
    if not user.mfa_enabled or user.totp_secret is None:
        raise MfaEnrolmentRequired(
            f"Enrol TOTP first (POST /auth/me/mfa/totp, then /auth/me/mfa/totp/confirm): "
            f"{purpose} needs your password and a TOTP code."
        )
    password = await reserve_password_attempt(session, rt, user.username, ip)
    try:
        code = await reserve_second_factor_attempt(session, rt, user, ip)
    except AccountLocked:
        await rt.throttle.released(password)
        raise
    password_ok = await rt.hasher.verify(user.password_hash, step_up.current_password)
    counter = verify_totp(
        open_totp_secret(rt.box, user.id, user.totp_secret),
        step_up.totp_code,
        last_used_counter=user.totp_last_counter,
    )
    code_ok = counter is not None and await UserRepository(session).advance_totp_counter(
        user, counter
    )
    checks = ((password, password_ok), (code, code_ok))
    for attempt, ok in checks:
        if ok:
            await rt.throttle.succeeded(attempt)
    failed = [attempt for attempt, ok in checks if not ok]
    if not failed:
        return
    await audit(
        session,
        "user.step_up_failed",
        actor=user.username,
        subject=str(user.id),
        ip=ip,
        purpose=purpose,
    )
    error = StepUpFailed("The current password or the code is wrong.")
    raise await fail_attempts(session, rt, failed, error, actor=user.username, ip=ip)
