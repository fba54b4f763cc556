"""Login, MFA step, refresh and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, status

from flightdeck_auth.dependencies import ClientIp, MeClaims, SessionDep
from flightdeck_auth.exceptions import (
    AccountLocked,
    InvalidCredentials,
    InvalidMfaCode,
    InvalidMfaToken,
    InvalidRefreshToken,
    MfaRequired,
)
from flightdeck_auth.login import service
from flightdeck_auth.login.schemas import (
    LOGIN_EXAMPLES,
    MFA_LOGIN_EXAMPLES,
    LoginRequest,
    MfaLoginRequest,
)
from flightdeck_auth.runtime import RuntimeDep
from flightdeck_auth.tokens.schemas import LogoutRequest, RefreshRequest, TokenPair
from flightdeck_common.auth.errors import InvalidToken, TokenRevoked
from flightdeck_common.errors import RateLimited, problem_responses
from flightdeck_common.rate_limit import rate_limit

router = APIRouter(prefix="/auth", tags=["login"])


@router.post(
    "/login",
    response_model=TokenPair,
    summary="Log in with username and password",
    dependencies=[Depends(rate_limit("login"))],
    responses=problem_responses(InvalidCredentials, MfaRequired, AccountLocked, RateLimited),
)
async def login(
    body: Annotated[LoginRequest, Body(openapi_examples=LOGIN_EXAMPLES)],
    session: SessionDep,
    rt: RuntimeDep,
    ip: ClientIp,
) -> TokenPair:
    """Log in with username and password.

    An account with TOTP gets a 401 problem `mfa_required` carrying `mfa_token`: send it
    with a code to `POST /auth/login/mfa`. Repeated failures lock the username or the
    client address for a while (423, with `Retry-After`). A login the risk policy refuses
    is answered and counted exactly as a wrong password.
    """
    return await service.password_login(session, rt, body.username, body.password, ip)


@router.post(
    "/login/mfa",
    response_model=TokenPair,
    summary="Complete a login with a TOTP code",
    dependencies=[Depends(rate_limit("login"))],
    responses=problem_responses(InvalidMfaToken, InvalidMfaCode, AccountLocked, RateLimited),
)
async def login_mfa(
    body: Annotated[MfaLoginRequest, Body(openapi_examples=MFA_LOGIN_EXAMPLES)],
    session: SessionDep,
    rt: RuntimeDep,
    ip: ClientIp,
) -> TokenPair:
    """Complete a login with the mfa_token and a TOTP code.

    Wrong codes count against the user and the client address (whatever the mfa_token),
    with the same doubling lock as passwords (423, with `Retry-After`); a correct password
    does not clear them. One mfa_token takes at most `mfa_max_attempts` codes.
    """
    return await service.mfa_login(session, rt, body.mfa_token, body.code, ip)


@router.post(
    "/token/refresh",
    response_model=TokenPair,
    summary="Exchange a refresh token for a new token pair",
    dependencies=[Depends(rate_limit("refresh"))],
    responses=problem_responses(InvalidRefreshToken, RateLimited),
)
async def refresh_token(
    body: RefreshRequest, session: SessionDep, rt: RuntimeDep, ip: ClientIp
) -> TokenPair:
    """Exchange a refresh token for a new token pair (the old refresh token is spent)."""
    return await service.refresh(session, rt, body.refresh_token, ip)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out (end this session)",
    dependencies=[Depends(rate_limit("default"))],
    responses=problem_responses(InvalidToken, TokenRevoked, RateLimited),
)
async def logout(
    body: LogoutRequest, claims: MeClaims, session: SessionDep, rt: RuntimeDep, ip: ClientIp
) -> None:
    """End this session: revoke the refresh token family and the access token."""
    await service.logout(session, rt, claims, body.refresh_token, ip)
