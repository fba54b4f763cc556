"""Errors of the auth service (each renders as problem+json with its code)."""

from __future__ import annotations

from flightdeck_common.errors import Conflict, FlightdeckError, NotFound, Unauthorized


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    title = "Invalid username or password"


class AccountLocked(FlightdeckError):
    status_code = 423
    code = "account_locked"
    title = "Too many failed logins; temporarily locked"
    example_members = {"retry_after": 30}


class MfaRequired(Unauthorized):
    code = "mfa_required"
    title = "A second factor is required"
    # Send mfa_token with a TOTP code to POST /auth/login/mfa within expires_in seconds.
    example_members = {"mfa_token": "q5Vt3xN8cA0rJ2mW9yK4pL7sD1fG6hZe", "expires_in": 300}


class InvalidMfaCode(Unauthorized):
    code = "invalid_mfa_code"
    title = "Invalid or expired second-factor code"


class InvalidMfaToken(Unauthorized):
    code = "invalid_mfa_token"
    title = "Invalid, used or expired MFA token"


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"
    title = "Invalid, expired or revoked refresh token"


class InvalidClient(Unauthorized):
    code = "invalid_client"
    title = "Invalid client credentials"


class InvalidScope(FlightdeckError):
    status_code = 400
    code = "invalid_scope"
    title = "Requested audience not allowed for this client"


class UnsupportedGrantType(FlightdeckError):
    status_code = 400
    code = "unsupported_grant_type"
    title = "Only client_credentials is supported"


class MfaAlreadyEnabled(Conflict):
    code = "mfa_already_enabled"
    title = "TOTP is already enabled"


class MfaNotPending(Conflict):
    code = "mfa_not_pending"
    title = "No TOTP enrolment to confirm; start one first"


class MfaNotEnabled(Conflict):
    code = "mfa_not_enabled"
    title = "TOTP is not enabled"


class ServiceAccountExists(Conflict):
    code = "service_account_exists"
    title = "A service account with this client_id exists"


class ServiceAccountNotFound(NotFound):
    code = "service_account_not_found"
    title = "No service account with this client_id"
