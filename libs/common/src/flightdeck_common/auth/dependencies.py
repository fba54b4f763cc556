"""FastAPI dependencies that authenticate the caller and check its role.

A service installs an ``AuthContext`` once, in its lifespan (where its httpx client and
Redis exist)::

    @contextlib.asynccontextmanager
    async def auth_hook(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
        async with httpx.AsyncClient() as http:
            keys = JwksKeySource(f"{settings.auth_base_url}{JWKS_PATH}", http)
            revocations = RedisRevocations(resources.redis) if resources.redis else ...
            verifier = TokenVerifier(keys, settings.jwt_issuer, revocations=revocations)
            install_auth(app, AuthContext(verifier))
            yield

(without Redis, ``revocations`` is a ``MemoryRevocations`` kept current by a started
``RevocationFeedFollower``, stopped after the ``yield``). Routes then declare what they need::

    @router.get("/pipelines")
    async def list_pipelines(user: CurrentUser) -> ...
    @router.post("/pipelines")
    async def create_pipeline(user: OperatorUser) -> ...
    @router.post("/admin/internal/audit-events")
    async def append_audit_events(
        caller: Annotated[TokenClaims, Depends(require_service("flightdeck:admin-internal"))],
    ) -> ...

Pass ``responses=USER_AUTH_RESPONSES`` (or ``SERVICE_AUTH_RESPONSES``) to the router so
the 401/403/503 problems are documented.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flightdeck_common.auth.claims import USER_AUDIENCE, Role, TokenClaims, TokenUse
from flightdeck_common.auth.errors import (
    MISSING_TOKEN_CHALLENGE,
    AuthUnavailable,
    InsufficientRole,
    InvalidToken,
    MfaEnrolmentRequired,
    TokenRevoked,
)
from flightdeck_common.auth.verifier import TokenVerifier
from flightdeck_common.errors import problem_responses

ClaimsDependency = Callable[..., Awaitable[TokenClaims]]

# Declares the security scheme in OpenAPI; errors are ours (401 problem), not FastAPI's 403.
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description=(
        "An access token from `POST /auth/login`, or a service token from "
        "`POST /auth/service-token`."
    ),
)

USER_AUTH_RESPONSES = problem_responses(
    InvalidToken, TokenRevoked, InsufficientRole, MfaEnrolmentRequired, AuthUnavailable
)
SERVICE_AUTH_RESPONSES = problem_responses(InvalidToken, TokenRevoked, AuthUnavailable)


@dataclass(frozen=True)
class AuthContext:
    """How this service verifies tokens; kept at ``app.state.auth`` by ``install_auth``."""

    verifier: TokenVerifier
    user_audience: str = USER_AUDIENCE


def install_auth(app: FastAPI, context: AuthContext) -> None:
    """Make ``context`` the one the auth dependencies of ``app`` use."""
    app.state.auth = context


def get_auth_context(request: Request) -> AuthContext:
    """The installed ``AuthContext``; a missing one is a programming error (500)."""
    context = getattr(request.app.state, "auth", None)
    if not isinstance(context, AuthContext):
        raise RuntimeError("no AuthContext: call install_auth(app, ...) in the lifespan")
    return context


def still_authorized(request: Request, claims: TokenClaims) -> Callable[[], Awaitable[bool]]:
    """For a long-lived response (an event stream): asks whether ``claims``, verified when
    it started, are still not revoked (logout, password change, deactivation), with the
    same denylist as every request (``EventSourceResponse(still_authorized=...)``)."""
    verifier = get_auth_context(request).verifier

    async def check() -> bool:
        return not await verifier.is_revoked(claims)

    return check


async def bearer_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str:
    """The raw token of ``Authorization: Bearer <token>``; 401 ``invalid_token`` otherwise."""
    if credentials is None:
        if "authorization" not in request.headers:
            raise InvalidToken(
                "Missing bearer token.", headers={"WWW-Authenticate": MISSING_TOKEN_CHALLENGE}
            )
        raise InvalidToken("Malformed Authorization header; expected 'Bearer <token>'.")
    return credentials.credentials


def require_user(
    min_role: Role | str = Role.VIEWER, *, allow_mfa_enrolment: bool = False
) -> ClaimsDependency:
    """A dependency returning the claims of a user access token of at least ``min_role``.

    401 ``invalid_token``/``token_revoked`` for a missing, invalid or revoked token and
    for service tokens; 403 ``mfa_enrolment_required`` for a token that must first enrol
    TOTP (unless ``allow_mfa_enrolment``, for the enrolment routes themselves); 403
    ``insufficient_role`` when the role is too low. The same arguments return the same
    dependency, so FastAPI verifies a token once per request however often it is declared.
    """
    return _user_dependency(Role(min_role), allow_mfa_enrolment)


def require_service(audience: str) -> ClaimsDependency:
    """A dependency returning the claims of a service token whose ``aud`` has ``audience``.

    User tokens are refused (401 ``invalid_token``).
    """
    return _service_dependency(audience)


@functools.cache
def _user_dependency(min_role: Role, allow_mfa_enrolment: bool) -> ClaimsDependency:
    async def authenticated_user(
        request: Request, token: Annotated[str, Depends(bearer_token)]
    ) -> TokenClaims:
        context = get_auth_context(request)
        claims = await context.verifier.verify(token, context.user_audience)
        if claims.token_use is not TokenUse.ACCESS:
            raise InvalidToken("A user access token is required.")
        if claims.mfa_enrolment_required and not allow_mfa_enrolment:
            raise MfaEnrolmentRequired("Enrol a second factor (TOTP) to use this endpoint.")
        if not claims.has_role(min_role):
            raise InsufficientRole(
                f"This endpoint requires the {min_role} role.", required_role=str(min_role)
            )
        request.state.token_claims = claims
        return claims

    return authenticated_user


@functools.cache
def _service_dependency(audience: str) -> ClaimsDependency:
    async def authenticated_service(
        request: Request, token: Annotated[str, Depends(bearer_token)]
    ) -> TokenClaims:
        claims = await get_auth_context(request).verifier.verify(token, audience)
        if claims.token_use is not TokenUse.SERVICE:
            raise InvalidToken("A service token is required.")
        request.state.token_claims = claims
        return claims

    return authenticated_service


BearerToken = Annotated[str, Depends(bearer_token)]
CurrentUser = Annotated[TokenClaims, Depends(require_user())]
OperatorUser = Annotated[TokenClaims, Depends(require_user(Role.OPERATOR))]
AdminUser = Annotated[TokenClaims, Depends(require_user(Role.ADMIN))]
# For the routes a user who must still enrol TOTP may reach (/auth/me, the enrolment routes).
MfaEnrolmentUser = Annotated[TokenClaims, Depends(require_user(allow_mfa_enrolment=True))]
