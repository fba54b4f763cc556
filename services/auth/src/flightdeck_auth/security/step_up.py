"""Step-up: the current password AND a fresh TOTP code, for changes a stolen session must
not make on its own (registering an approval key, creating a service account).

A wrong password or code answers 401 ``step_up_failed`` (without saying which) and counts
as a failed login of the user and the client IP, with the same doubling lock; while
locked, 423. A user without TOTP gets 403 ``mfa_enrolment_required``: enrol first.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.exceptions import AccountLocked
from flightdeck_auth.failures import keep_and_fail
from flightdeck_auth.outbox import audit
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.totp import verify_totp
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
    """Return when ``step_up`` proves ``user`` is at the keyboard; raise otherwise."""
    if not user.mfa_enabled or user.totp_secret is None:
        raise MfaEnrolmentRequired(
            f"Enrol TOTP first (POST /auth/me/mfa/totp, then /auth/me/mfa/totp/confirm): "
            f"{purpose} needs your password and a TOTP code."
        )
    lock = await rt.throttle.check(user.username, ip)
    if lock is not None:
        raise AccountLocked(
            f"Too many failed attempts for this {lock.scope}; try again in {lock.retry_after} s.",
            headers={"Retry-After": str(lock.retry_after)},
            retry_after=lock.retry_after,
        )
    password_ok = await rt.hasher.verify(user.password_hash, step_up.current_password)
    counter = verify_totp(
        rt.box.open(user.totp_secret), step_up.totp_code, last_used_counter=user.totp_last_counter
    )
    if (
        password_ok
        and counter is not None
        and await UserRepository(session).advance_totp_counter(user, counter)
    ):
        return
    await rt.throttle.record_failure(user.username, ip)
    await audit(
        session,
        "user.step_up_failed",
        actor=user.username,
        subject=str(user.id),
        ip=ip,
        purpose=purpose,
    )
    raise await keep_and_fail(session, StepUpFailed("The current password or the code is wrong."))
