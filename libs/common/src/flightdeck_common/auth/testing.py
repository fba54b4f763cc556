"""Minting tokens in tests: an issuer with its own Ed25519 keys, following the token contract.

Services' tests use it to call their routes as a viewer, an admin or a service account
without running auth::

    minter = TokenMinter()
    install_auth(app, AuthContext(TokenVerifier(minter.key_source())))
    headers = {"Authorization": f"Bearer {minter.user_token(role=Role.ADMIN)}"}
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flightdeck_common.auth.claims import (
    AUTH_REVOCATIONS_AUDIENCE,
    DEFAULT_ISSUER,
    SERVICE_SUBJECT_PREFIX,
    USER_AUDIENCE,
    Role,
    TokenUse,
)
from flightdeck_common.auth.keys import StaticKeySource, public_jwk


class TokenMinter:
    """Signs tokens like auth does, with keys generated on the spot (``kid`` → private key)."""

    def __init__(self, issuer: str = DEFAULT_ISSUER, kid: str = "test-key-1") -> None:
        self.issuer = issuer
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.current_kid = self.add_key(kid)

    def add_key(self, kid: str | None = None) -> str:
        """Generate a key (made current) and return its kid."""
        kid = kid or f"test-key-{len(self.keys) + 1}"
        self.keys[kid] = Ed25519PrivateKey.generate()
        self.current_kid = kid
        return kid

    def jwks(self, kids: Iterable[str] | None = None) -> dict[str, list[dict[str, str]]]:
        """The JWKS document publishing ``kids`` (default: every key)."""
        selected = self.keys if kids is None else list(kids)
        return {"keys": [public_jwk(self.keys[kid].public_key(), kid) for kid in selected]}

    def key_source(self) -> StaticKeySource:
        """A key source trusting every key of this minter."""
        return StaticKeySource({kid: key.public_key() for kid, key in self.keys.items()})

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        key: Ed25519PrivateKey | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` as given with EdDSA (``key`` overrides the kid's own key)."""
        kid = kid or self.current_kid
        signing_key = key or self.keys[kid]
        header = {"kid": kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(dict(claims), signing_key, algorithm="EdDSA", headers=header)

    def claims(
        self,
        *,
        sub: str,
        audience: str | Sequence[str],
        token_use: TokenUse | str,
        ttl: float = 900,
        issued_at: float | None = None,
        omit: Iterable[str] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        """A full claim set; ``extra`` adds or overrides claims, ``omit`` drops some."""
        now = time.time() if issued_at is None else issued_at
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience if isinstance(audience, str) else list(audience),
            "sub": sub,
            "jti": secrets.token_urlsafe(12),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "token_use": str(token_use),
            **extra,
        }
        for name in omit:
            claims.pop(name, None)
        return claims

    def user_token(
        self,
        sub: str = "1",
        role: Role | str = Role.VIEWER,
        *,
        username: str = "alice",
        audience: str | Sequence[str] = USER_AUDIENCE,
        mfa_enrolment_required: bool = False,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A user access token (``claims`` as in ``claims()``)."""
        if mfa_enrolment_required:
            claims["mfa_enrolment_required"] = True
        return self.sign(
            self.claims(
                sub=sub,
                audience=audience,
                token_use=TokenUse.ACCESS,
                role=str(role),
                username=username,
                **claims,
            ),
            kid=kid,
        )

    def service_token(
        self,
        client_id: str = "pipeline",
        audiences: Sequence[str] = (AUTH_REVOCATIONS_AUDIENCE,),
        *,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A service-account token for ``audiences``."""
        return self.sign(
            self.claims(
                sub=SERVICE_SUBJECT_PREFIX + client_id,
                audience=list(audiences),
                token_use=TokenUse.SERVICE,
                **claims,
            ),
            kid=kid,
        )
