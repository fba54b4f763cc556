"""Access and service tokens: EdDSA JWTs signed with the current key."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from flightdeck_auth.settings import USER_AUDIENCE, Settings
from flightdeck_auth.tokens.keyring import KeyRing
from flightdeck_auth.users.models import User
from flightdeck_common.db import utcnow


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: datetime
    expires_in: int


class TokenIssuer:
    def __init__(self, keyring: KeyRing, settings: Settings) -> None:
        self.keyring = keyring
        self.settings = settings

    async def _sign(self, claims: dict[str, object], ttl: int) -> IssuedToken:
        key = await self.keyring.current()
        assert key.private_key is not None
        now = utcnow()
        expires_at = now + timedelta(seconds=ttl)
        jti = secrets.token_urlsafe(16)
        payload = {
            **claims,
            "iss": self.settings.jwt_issuer,
            "jti": jti,
            # Fractional: a token issued right after a subject revocation must not look
            # older than it (revocations compare against iat).
            "iat": now.timestamp(),
            "nbf": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        token = jwt.encode(payload, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
        return IssuedToken(token, jti, expires_at, ttl)

    async def access_token(self, user: User) -> IssuedToken:
        """A user's access token; roles that must enrol MFA are confined until they do."""
        claims: dict[str, object] = {
            "sub": str(user.id),
            "aud": USER_AUDIENCE,
            "role": user.role,
            "username": user.username,
            "token_use": "access",
        }
        if user.role in self.settings.limited_roles and not user.mfa_enabled:
            claims["mfa_enrolment_required"] = True
        return await self._sign(claims, self.settings.access_token_ttl_seconds)

    async def service_token(self, client_id: str, audiences: list[str]) -> IssuedToken:
        claims: dict[str, object] = {
            "sub": f"svc:{client_id}",
            "aud": audiences,
            "token_use": "service",
        }
        return await self._sign(claims, self.settings.service_token_ttl_seconds)
