"""Typed dependencies of the auth service's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from flightdeck_auth.internal.capabilities import require_capability
from flightdeck_auth.users.models import User
from flightdeck_common.auth.claims import (
    AUTH_REVOCATIONS_AUDIENCE,
    AUTH_USERS_AUDIENCE,
    TokenClaims,
)
from flightdeck_common.auth.dependencies import require_user
from flightdeck_common.dependencies import ClientIp, SessionDep
from flightdeck_common.errors import Unauthorized

# /auth/me* is reachable with a token that still has to enrol MFA: that is how they enrol.
MeClaims = Annotated[TokenClaims, Depends(require_user(allow_mfa_enrolment=True))]
# The internal API by capability: a token for the revocation feed cannot administer users.
RevocationReader = Annotated[TokenClaims, Depends(require_capability(AUTH_REVOCATIONS_AUDIENCE))]
UserAdministrator = Annotated[TokenClaims, Depends(require_capability(AUTH_USERS_AUDIENCE))]


async def current_user_row(claims: MeClaims, session: SessionDep) -> User:
    """The signed-in user's row; a deactivated or deleted user is signed out."""
    user = await session.get(User, int(claims.sub)) if claims.sub.isdigit() else None
    if user is None or not user.is_active:
        raise Unauthorized("This account is not active.")
    return user


CurrentUserRow = Annotated[User, Depends(current_user_row)]


__all__ = [
    "ClientIp",
    "CurrentUserRow",
    "MeClaims",
    "RevocationReader",
    "SessionDep",
    "UserAdministrator",
]
