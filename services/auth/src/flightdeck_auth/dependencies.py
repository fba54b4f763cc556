"""Typed dependencies of the auth service's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from flightdeck_auth.users.models import User
from flightdeck_common.auth.claims import TokenClaims
from flightdeck_common.auth.dependencies import require_service, require_user
from flightdeck_common.dependencies import ClientIp, SessionDep
from flightdeck_common.errors import Unauthorized

INTERNAL_AUDIENCE = "flightdeck:auth-internal"

# /auth/me* is reachable with a token that still has to enrol MFA: that is how they enrol.
MeClaims = Annotated[TokenClaims, Depends(require_user(allow_mfa_enrolment=True))]
ServiceClaims = Annotated[TokenClaims, Depends(require_service(INTERNAL_AUDIENCE))]


async def current_user_row(claims: MeClaims, session: SessionDep) -> User:
    """The signed-in user's row; a deactivated or deleted user is signed out."""
    user = await session.get(User, int(claims.sub)) if claims.sub.isdigit() else None
    if user is None or not user.is_active:
        raise Unauthorized("This account is not active.")
    return user


CurrentUserRow = Annotated[User, Depends(current_user_row)]


__all__ = ["ClientIp", "CurrentUserRow", "MeClaims", "ServiceClaims", "SessionDep"]
