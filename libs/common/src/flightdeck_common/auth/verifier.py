"""Verifying access and service tokens locally, with auth's public keys.

Every check that fails raises ``InvalidToken`` with a short detail that names the failed
check but never echoes the token or the key; a revoked token raises ``TokenRevoked``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flightdeck_common.auth.claims import (
    DEFAULT_ISSUER,
    SERVICE_SUBJECT_PREFIX,
    Role,
    TokenClaims,
    TokenUse,
)
from flightdeck_common.auth.errors import InvalidToken, TokenRevoked
from flightdeck_common.auth.keys import KeySource
from flightdeck_common.auth.revocation import RevocationChecker

ALGORITHM = "EdDSA"
MAX_TOKEN_BYTES = 8 * 1024
MAX_KID_LENGTH = 128
REQUIRED_CLAIMS = ("iss", "aud", "sub", "jti", "iat", "exp", "token_use")
# Tokens already verified, kept so a client's next requests skip parsing and the signature.
VERIFIED_CACHE_SIZE = 1024
# Three base64url segments, signature not empty (this alone rejects unsigned "alg": "none").
_ROLE_VALUES = frozenset(role.value for role in Role)
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed every check but revocation at ``verified_at``."""

    kid: str
    key: Ed25519PublicKey
    claims: TokenClaims
    verified_at: float
    valid_until: float  # PyJWT refuses it as expired from this moment (exp + leeway)


class TokenVerifier:
    """Checks a bearer token end to end and returns its claims.

    ``leeway_seconds`` tolerates clock skew between auth and this service for ``exp``,
    ``nbf`` and ``iat``. ``revocations`` is None only where nothing can be revoked
    (tests); services pass ``RedisRevocations`` or the ``MemoryRevocations`` that a
    ``RevocationFeedFollower`` keeps up to date.
    """

    def __init__(
        self,
        key_source: KeySource,
        issuer: str = DEFAULT_ISSUER,
        *,
        leeway_seconds: float = 10,
        revocations: RevocationChecker | None = None,
    ) -> None:
        self.key_source = key_source
        self.issuer = issuer
        self.leeway_seconds = leeway_seconds
        self.revocations = revocations
        self._verified: dict[tuple[str, str], _Verified] = {}

    async def verify(self, token: str, audience: str) -> TokenClaims:
        """The claims of ``token`` if it is a valid, unrevoked token for ``audience``.

        Raises ``InvalidToken`` (401) for anything that is not an unexpired EdDSA JWS
        signed by a published key, from our issuer, for ``audience`` and with every
        required claim; ``TokenRevoked`` (401) when it has been revoked;
        ``AuthUnavailable`` (503) when its key is unknown and the keys cannot be fetched.

        A token verified before is not parsed nor its signature checked again while its
        key is still the one published for its kid and it has not expired; the
        revocation check runs on every call.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("Token too large.")
        claims = await self._verified_claims(token, audience)
        if claims is None:
            claims = await self._verify_token(token, audience)
        if self.revocations is not None and await self.revocations.is_revoked(claims):
            raise TokenRevoked("Token has been revoked.")
        return claims

    async def is_revoked(self, claims: TokenClaims) -> bool:
        """Whether ``claims`` (of a token verified before) have been revoked since: what a
        long-lived response, e.g. an event stream, asks again while it runs."""
        return self.revocations is not None and await self.revocations.is_revoked(claims)

    async def _verified_claims(self, token: str, audience: str) -> TokenClaims | None:
        """The claims of a cached verification that still holds, else None.

        Every check but the time ones depends only on the token, the audience and the
        key; the time checks that passed at ``verified_at`` (``iat``, ``nbf`` not in the
        future) still pass later, and ``exp`` is checked against the clock here as PyJWT
        does. A clock that went back, or another key behind the kid, means a full check.
        """
        entry = self._verified.get((token, audience))
        if entry is None:
            return None
        now = time.time()
        if not entry.verified_at <= now < entry.valid_until:
            del self._verified[(token, audience)]
            return None
        if await self.key_source.get(entry.kid) is not entry.key:
            self._verified.pop((token, audience), None)
            return None
        return entry.claims

    async def _verify_token(self, token: str, audience: str) -> TokenClaims:
        """Every check but revocation, the result cached for ``_verified_claims``."""
        if _COMPACT_JWS.fullmatch(token) is None:
            raise InvalidToken("Malformed token.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("Malformed token.") from None
        # Checked before any key is looked up: "none", HS256 keyed with our public key
        # and every other algorithm never reach a verifier.
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("Unsupported token algorithm.")
        if "crit" in header:
            raise InvalidToken("Unsupported token header.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise InvalidToken("Token has no valid key id.")
        key = await self.key_source.get(kid)
        if key is None:
            raise InvalidToken("Token signed by an unknown key.")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_describe(exc)) from None
        verified_at = time.time()  # no earlier than the clock PyJWT checked the times with
        claims = _claims(payload)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[(token, audience)] = _Verified(
            kid=kid,
            key=key,
            claims=claims,
            verified_at=verified_at,
            # PyJWT: expired once int(exp) <= now - leeway.
            valid_until=int(payload["exp"]) + self.leeway_seconds,
        )
        return claims


def _describe(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "Token expired."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "Token not yet valid."
    if isinstance(exc, jwt.InvalidSignatureError):
        return "Invalid token signature."
    if isinstance(exc, jwt.InvalidAudienceError):
        return "Token not valid for this audience."
    if isinstance(exc, jwt.InvalidIssuerError):
        return "Token from an unexpected issuer."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"Token lacks the {exc.claim!r} claim."
    if isinstance(exc, jwt.DecodeError):
        return "Malformed token."
    return "Invalid token."


def _claims(payload: Mapping[str, Any]) -> TokenClaims:
    """Type-check the claims PyJWT does not, and bind the user/service invariants."""
    try:
        token_use = TokenUse(payload["token_use"])
    except (ValueError, TypeError):
        raise InvalidToken("Token is not an access or service token.") from None
    sub, jti = payload["sub"], payload["jti"]
    if not sub or not jti:
        raise InvalidToken("Token has an empty 'sub' or 'jti'.")
    iat, exp = payload["iat"], payload["exp"]
    if not _is_number(iat) or not _is_number(exp):
        raise InvalidToken("Token has non-numeric times.")
    aud_claim = payload["aud"]
    audiences = (aud_claim,) if isinstance(aud_claim, str) else tuple(aud_claim)
    mfa_claim = payload.get("mfa_enrolment_required", False)
    if not isinstance(mfa_claim, bool):
        raise InvalidToken("Token has an invalid 'mfa_enrolment_required' claim.")
    username = payload.get("username")
    if username is not None and not isinstance(username, str):
        raise InvalidToken("Token has an invalid 'username' claim.")

    role: Role | None = None
    if token_use is TokenUse.SERVICE:
        if not sub.startswith(SERVICE_SUBJECT_PREFIX) or "role" in payload:
            raise InvalidToken("Malformed service token.")
    else:
        if sub.startswith(SERVICE_SUBJECT_PREFIX):
            raise InvalidToken("Malformed access token.")
        role_claim = payload.get("role")
        if role_claim not in _ROLE_VALUES:
            raise InvalidToken("Token has no valid 'role' claim.")
        role = Role(role_claim)
    return TokenClaims(
        sub=sub,
        jti=jti,
        iat=float(iat),
        exp=float(exp),
        aud=audiences,
        token_use=token_use,
        role=role,
        username=username,
        mfa_enrolment_required=mfa_claim,
        raw=MappingProxyType(dict(payload)),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
