"""Every table of the auth service (imported so alembic sees the whole metadata)."""

from flightdeck_auth.mfa.models import MfaChallenge
from flightdeck_auth.outbox import OutboxEvent
from flightdeck_auth.service_accounts.models import ServiceAccount
from flightdeck_auth.tokens.models import RefreshToken, Revocation, SigningKey
from flightdeck_auth.users.models import User, UserLoginIp

__all__ = [
    "MfaChallenge",
    "OutboxEvent",
    "RefreshToken",
    "Revocation",
    "ServiceAccount",
    "SigningKey",
    "User",
    "UserLoginIp",
]
