"""What a verified token says: its subject, role, audiences and lifetime.

The token contract (issued by the auth service, verified everywhere):

- header ``{"alg": "EdDSA", "typ": "JWT", "kid": ...}`` (Ed25519);
- claims ``iss``, ``aud``, ``sub``, ``jti``, ``iat``, ``nbf``, ``exp``, ``token_use``
  (``"access"`` for users, ``"service"`` for service accounts whose ``sub`` is
  ``"svc:<client_id>"``), and for users ``role``, ``username`` and optionally
  ``mfa_enrolment_required: true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

DEFAULT_ISSUER = "flightdeck-auth"
USER_AUDIENCE = "flightdeck"
# Auth's internal API is split by capability: following token revocations, and user
# administration (create users from a hash, change roles, read approval keys).
AUTH_REVOCATIONS_AUDIENCE = "flightdeck:auth-revocations"
AUTH_USERS_AUDIENCE = "flightdeck:auth-users"
ADMIN_INTERNAL_AUDIENCE = "flightdeck:admin-internal"
SERVICE_SUBJECT_PREFIX = "svc:"


class Role(StrEnum):
    """A user's role; roles are ordered ``viewer < operator < admin``.

    The comparison operators compare by rank, never alphabetically (a plain ``str``
    comparison would put ``admin`` below ``viewer``). Comparing with a string that is
    not a role raises ``ValueError``.
    """

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the hierarchy: viewer 0, operator 1, admin 2."""
        return _RANKS[self]

    def at_least(self, minimum: Role | str) -> bool:
        """Whether this role grants everything ``minimum`` grants."""
        return self.rank >= Role(minimum).rank

    def __lt__(self, other: str) -> bool:
        return self.rank < Role(other).rank

    def __le__(self, other: str) -> bool:
        return self.rank <= Role(other).rank

    def __gt__(self, other: str) -> bool:
        return self.rank > Role(other).rank

    def __ge__(self, other: str) -> bool:
        return self.rank >= Role(other).rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class TokenUse(StrEnum):
    """What kind of principal a token stands for."""

    ACCESS = "access"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The claims of a verified token (build it with ``TokenVerifier.verify``).

    ``iat`` and ``exp`` are unix seconds as issued (JWT NumericDate; may be fractional).
    ``aud`` is always a tuple, even when the token carried a single string. ``raw`` holds
    every claim as decoded, for the rare caller that needs one not modelled here.
    """

    sub: str
    jti: str
    iat: float
    exp: float
    aud: tuple[str, ...]
    token_use: TokenUse
    role: Role | None = None
    username: str | None = None
    mfa_enrolment_required: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_service(self) -> bool:
        """Whether this is a service account's token (``token_use == "service"``)."""
        return self.token_use is TokenUse.SERVICE

    @property
    def actor_name(self) -> str:
        """Who an audit event names for this token: the username, else the subject."""
        return self.username or self.sub

    @property
    def user_id(self) -> str | None:
        """The user id (``sub``) of a user token; None for service tokens."""
        return None if self.is_service else self.sub

    @property
    def client_id(self) -> str | None:
        """The service account's client id of a service token; None for user tokens."""
        if not self.is_service:
            return None
        return self.sub.removeprefix(SERVICE_SUBJECT_PREFIX)

    @property
    def issued_at(self) -> datetime:
        """``iat`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.iat, UTC)

    @property
    def expires_at(self) -> datetime:
        """``exp`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.exp, UTC)

    def has_role(self, minimum: Role | str) -> bool:
        """Whether this is a user token whose role is at least ``minimum``."""
        return self.role is not None and self.role.at_least(minimum)
