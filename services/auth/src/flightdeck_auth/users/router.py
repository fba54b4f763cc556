"""The signed-in user's own account: profile, password, TOTP, approval key."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from flightdeck_auth.dependencies import ClientIp, CurrentUserRow, SessionDep
from flightdeck_auth.exceptions import (
    AccountLocked,
    InvalidCredentials,
    InvalidMfaCode,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaNotPending,
)
from flightdeck_auth.mfa import service as mfa
from flightdeck_auth.mfa.schemas import TotpCode, TotpEnrolment
from flightdeck_auth.runtime import RuntimeDep
from flightdeck_auth.security.approval_keys import InvalidApprovalKey
from flightdeck_auth.security.step_up import STEP_UP_ERRORS
from flightdeck_auth.users import service
from flightdeck_auth.users.schemas import ApprovalKeyUpdate, PasswordChange, UserRead, user_read
from flightdeck_common.auth.errors import InvalidToken, TokenRevoked
from flightdeck_common.errors import FlightdeckError, RateLimited, Unauthorized, problem_responses
from flightdeck_common.passwords import WeakPassword
from flightdeck_common.rate_limit import rate_limit

# Every route here is under the default limit per client address (rate_limit_default).
router = APIRouter(prefix="/auth/me", tags=["me"], dependencies=[Depends(rate_limit("default"))])

# A missing, invalid or revoked token, or an account deactivated since it was issued; or
# too many requests from this address.
SIGNED_IN_ERRORS: tuple[type[FlightdeckError], ...] = (
    InvalidToken,
    TokenRevoked,
    Unauthorized,
    RateLimited,
)


@router.get(
    "",
    response_model=UserRead,
    summary="Read the signed-in user",
    responses=problem_responses(*SIGNED_IN_ERRORS),
)
async def read_me(user: CurrentUserRow) -> UserRead:
    """The signed-in user."""
    return user_read(user)


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change my password",
    responses=problem_responses(*SIGNED_IN_ERRORS, InvalidCredentials, AccountLocked, WeakPassword),
)
async def change_my_password(
    body: PasswordChange, user: CurrentUserRow, session: SessionDep, rt: RuntimeDep, ip: ClientIp
) -> None:
    """Change the password; every other session ends.

    A wrong current password counts as a failed login of this user (the same lock, 423).
    """
    await service.change_password(session, rt, user, body.current_password, body.new_password, ip)


@router.post(
    "/mfa/totp",
    response_model=TotpEnrolment,
    status_code=status.HTTP_201_CREATED,
    summary="Start TOTP enrolment",
    responses=problem_responses(*SIGNED_IN_ERRORS, MfaAlreadyEnabled),
)
async def start_totp_enrolment(
    user: CurrentUserRow, session: SessionDep, rt: RuntimeDep
) -> TotpEnrolment:
    """Start TOTP enrolment: returns the secret and an otpauth:// URI to scan."""
    return await mfa.start_enrolment(session, rt, user)


@router.post(
    "/mfa/totp/confirm",
    response_model=UserRead,
    summary="Confirm TOTP enrolment with a code",
    responses=problem_responses(
        *SIGNED_IN_ERRORS, InvalidMfaCode, AccountLocked, MfaAlreadyEnabled, MfaNotPending
    ),
)
async def confirm_totp_enrolment(
    body: TotpCode, user: CurrentUserRow, session: SessionDep, rt: RuntimeDep, ip: ClientIp
) -> UserRead:
    """Activate TOTP with a current code (log in again to get unrestricted tokens).

    Wrong codes count as wrong second factors of this user (the login's lock, 423).
    """
    await mfa.confirm_enrolment(session, rt, user, body.code, ip)
    return user_read(user)


@router.delete(
    "/mfa/totp",
    response_model=UserRead,
    summary="Turn TOTP off",
    responses=problem_responses(*SIGNED_IN_ERRORS, InvalidMfaCode, AccountLocked, MfaNotEnabled),
)
async def disable_totp(
    body: TotpCode, user: CurrentUserRow, session: SessionDep, rt: RuntimeDep, ip: ClientIp
) -> UserRead:
    """Turn TOTP off; needs a current code.

    Wrong codes count as wrong second factors of this user (the login's lock, 423).
    """
    await mfa.disable(session, rt, user, body.code, ip)
    return user_read(user)


@router.put(
    "/approval-key",
    response_model=UserRead,
    summary="Register my approval key",
    responses=problem_responses(*SIGNED_IN_ERRORS, *STEP_UP_ERRORS, InvalidApprovalKey),
)
async def set_my_approval_key(
    body: ApprovalKeyUpdate, user: CurrentUserRow, session: SessionDep, rt: RuntimeDep, ip: ClientIp
) -> UserRead:
    """Register the public key that signs this user's approval decisions (step-up: the
    current password and a TOTP code; users without TOTP must enrol first)."""
    await service.set_approval_key(session, rt, user, body, ip=ip)
    return user_read(user)
