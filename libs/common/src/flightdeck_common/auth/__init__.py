"""Authentication for every Flightdeck service: verify auth's EdDSA JWTs locally.

- ``TokenVerifier`` checks a token against auth's keys (``JwksKeySource``) and revocations
  (``RedisRevocations``, or ``MemoryRevocations`` fed by ``RevocationFeedFollower``).
- ``require_user`` / ``require_service`` and the ``CurrentUser``, ``OperatorUser``,
  ``AdminUser`` aliases guard routes once ``install_auth(app, AuthContext(...))`` ran.
- ``ServiceTokenProvider`` obtains this service's own token for calls to other services.
"""

from flightdeck_common.auth.claims import (
    ADMIN_INTERNAL_AUDIENCE,
    AUTH_REVOCATIONS_AUDIENCE,
    AUTH_USERS_AUDIENCE,
    DEFAULT_ISSUER,
    SERVICE_SUBJECT_PREFIX,
    USER_AUDIENCE,
    Role,
    TokenClaims,
    TokenUse,
)
from flightdeck_common.auth.dependencies import (
    SERVICE_AUTH_RESPONSES,
    USER_AUTH_RESPONSES,
    AdminUser,
    AuthContext,
    BearerToken,
    CurrentUser,
    MfaEnrolmentUser,
    OperatorUser,
    bearer_token,
    get_auth_context,
    install_auth,
    require_service,
    require_user,
)
from flightdeck_common.auth.errors import (
    AuthUnavailable,
    InsufficientRole,
    InvalidToken,
    MfaEnrolmentRequired,
    TokenRevoked,
)
from flightdeck_common.auth.keys import (
    JWKS_PATH,
    InvalidJwk,
    JwksKeySource,
    KeySource,
    StaticKeySource,
    load_jwk,
    public_jwk,
)
from flightdeck_common.auth.revocation import (
    REVOCATION_FEED_PATH,
    MemoryRevocations,
    RedisRevocations,
    RevocationChecker,
    RevocationFeedFollower,
    RevocationFeedUnavailable,
)
from flightdeck_common.auth.service_tokens import (
    SERVICE_TOKEN_PATH,
    ServiceCredentialsRejected,
    ServiceTokenProvider,
    TokenProvider,
)
from flightdeck_common.auth.verifier import TokenVerifier

__all__ = [
    "ADMIN_INTERNAL_AUDIENCE",
    "AUTH_REVOCATIONS_AUDIENCE",
    "AUTH_USERS_AUDIENCE",
    "DEFAULT_ISSUER",
    "JWKS_PATH",
    "REVOCATION_FEED_PATH",
    "SERVICE_AUTH_RESPONSES",
    "SERVICE_SUBJECT_PREFIX",
    "SERVICE_TOKEN_PATH",
    "USER_AUDIENCE",
    "USER_AUTH_RESPONSES",
    "AdminUser",
    "AuthContext",
    "AuthUnavailable",
    "BearerToken",
    "CurrentUser",
    "InsufficientRole",
    "InvalidJwk",
    "InvalidToken",
    "JwksKeySource",
    "KeySource",
    "MemoryRevocations",
    "MfaEnrolmentRequired",
    "MfaEnrolmentUser",
    "OperatorUser",
    "RedisRevocations",
    "RevocationChecker",
    "RevocationFeedFollower",
    "RevocationFeedUnavailable",
    "Role",
    "ServiceCredentialsRejected",
    "ServiceTokenProvider",
    "StaticKeySource",
    "TokenClaims",
    "TokenProvider",
    "TokenRevoked",
    "TokenUse",
    "TokenVerifier",
    "bearer_token",
    "get_auth_context",
    "install_auth",
    "load_jwk",
    "public_jwk",
    "require_service",
    "require_user",
]
