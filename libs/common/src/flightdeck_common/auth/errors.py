"""The errors authentication and authorization raise, rendered as problem+json."""

from __future__ import annotations

from typing import Any

from flightdeck_common.errors import Forbidden, ServiceUnavailable, Unauthorized

# WWW-Authenticate challenges (RFC 6750 section 3), not secrets.
INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'  # noqa: S105
MISSING_TOKEN_CHALLENGE = "Bearer"  # noqa: S105


class InvalidToken(Unauthorized):
    """401: no usable bearer token (missing, malformed, badly signed, expired, wrong audience ...).

    Carries ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750) unless the
    caller passes its own headers. Details are short and never echo the token.
    """

    code = "invalid_token"
    title = "Invalid token"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if headers is None:
            headers = {"WWW-Authenticate": INVALID_TOKEN_CHALLENGE}
        super().__init__(detail, headers=headers, **extra)


class TokenRevoked(InvalidToken):
    """401: the token was valid but has been revoked (logout, deactivation, logout-all)."""

    code = "token_revoked"
    title = "Token revoked"


class InsufficientRole(Forbidden):
    """403: the user is authenticated but their role is below what the route requires."""

    code = "insufficient_role"
    title = "Insufficient role"
    example_members = {"required_role": "operator"}


class MfaEnrolmentRequired(Forbidden):
    """403: the user must enrol a second factor before using anything but the enrolment routes."""

    code = "mfa_enrolment_required"
    title = "MFA enrolment required"


class AuthUnavailable(ServiceUnavailable):
    """503: the auth service is needed (unknown signing key, service token) but unreachable."""

    code = "auth_unavailable"
    title = "Authentication service unavailable"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if headers is None:
            headers = {"Retry-After": "5"}
        super().__init__(detail, headers=headers, **extra)
