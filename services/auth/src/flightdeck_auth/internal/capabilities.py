"""Which part of the internal API a service token may call: one audience per capability.

A token for auth's revocation feed (``flightdeck:auth-revocations``) cannot administer users
(``flightdeck:auth-users``), and the reverse. A valid service token of auth's that lacks the
route's audience gets 403 ``missing_audience`` (it is authenticated, just not for this);
anything else the verifier refuses stays 401.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from flightdeck_common.auth.claims import (
    AUTH_REVOCATIONS_AUDIENCE,
    AUTH_USERS_AUDIENCE,
    TokenClaims,
    TokenUse,
)
from flightdeck_common.auth.dependencies import bearer_token, get_auth_context
from flightdeck_common.auth.errors import InvalidToken
from flightdeck_common.errors import Forbidden

AUTH_AUDIENCES = (AUTH_REVOCATIONS_AUDIENCE, AUTH_USERS_AUDIENCE)


class MissingAudience(Forbidden):
    code = "missing_audience"
    title = "This service token is not for this part of the internal API"
    example_members = {"required_audience": AUTH_USERS_AUDIENCE}


@functools.cache
def require_capability(audience: str) -> Callable[..., Awaitable[TokenClaims]]:
    """A dependency returning the claims of a service token whose ``aud`` has ``audience``."""

    async def capable_service(
        request: Request, token: Annotated[str, Depends(bearer_token)]
    ) -> TokenClaims:
        verifier = get_auth_context(request).verifier
        try:
            claims = await verifier.verify(token, audience)
        except InvalidToken:
            for other in AUTH_AUDIENCES:
                if other == audience:
                    continue
                try:
                    elsewhere = await verifier.verify(token, other)
                except InvalidToken:
                    continue
                if elsewhere.token_use is TokenUse.SERVICE:
                    raise MissingAudience(
                        f"This service token lacks the {audience} audience.",
                        required_audience=audience,
                    ) from None
            raise
        if claims.token_use is not TokenUse.SERVICE:
            raise InvalidToken("A service token is required.")
        request.state.token_claims = claims
        return claims

    return capable_service
