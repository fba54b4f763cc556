"""Where verifiers find auth's public keys: the JWKS endpoint (cached) or a fixed set.

``JwksKeySource`` is what pipeline and admin use: keys are fetched lazily and cached; an
unknown ``kid`` (a key rotation) triggers at most one refetch per ``min_refetch_interval``,
shared by all concurrent callers, so a flood of tokens with made-up kids cannot turn into
a flood of requests to auth. Cached keys keep verifying while auth is down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from flightdeck_common.auth.errors import AuthUnavailable

JWKS_PATH = "/auth/.well-known/jwks.json"
MAX_JWKS_BYTES = 64 * 1024
ED25519_KEY_BYTES = 32

logger = logging.getLogger(__name__)


class KeySource(Protocol):
    """Looks up the Ed25519 public key a token's ``kid`` names."""

    async def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key for ``kid``, or None when it is not (or no longer) published.

        Raises ``AuthUnavailable`` when the answer cannot be known (keys unreachable).
        """
        ...


class InvalidJwk(ValueError):
    """A JWK that is not a usable Ed25519 signature-verification key."""


def public_jwk(public_key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The public JWK (RFC 8037, ``OKP``/``Ed25519``) of ``public_key``, as published in the JWKS."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def load_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """The Ed25519 public key of an ``OKP`` JWK.

    Raises ``InvalidJwk`` for any other key type or curve, a malformed ``x``, or an
    ``alg``/``use`` that says the key is not for EdDSA signatures.
    """
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise InvalidJwk("not an OKP Ed25519 key")
    if jwk.get("alg", "EdDSA") != "EdDSA":
        raise InvalidJwk("key is not for EdDSA")
    if jwk.get("use", "sig") != "sig":
        raise InvalidJwk("key is not for signatures")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise InvalidJwk("missing x")
    try:
        raw = base64.b64decode(x + "=" * (-len(x) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidJwk("x is not base64url") from exc
    if len(raw) != ED25519_KEY_BYTES:
        raise InvalidJwk("x is not a 32-byte Ed25519 key")
    return Ed25519PublicKey.from_public_bytes(raw)


def usable_keys(jwks: Any) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 verification keys of a JWKS document by kid; other keys are skipped.

    Raises ``ValueError`` when the document is not a JWKS at all.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            keys[kid] = load_jwk(jwk)
        except InvalidJwk as exc:
            logger.debug("ignoring JWK %r: %s", kid, exc)
    return keys


class StaticKeySource:
    """A fixed (but editable) set of keys: for tests, and for auth verifying its own tokens."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self._keys = dict(keys or {})

    async def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key for ``kid`` or None."""
        return self._keys.get(kid)

    def add(self, kid: str, key: Ed25519PublicKey) -> None:
        """Publish ``key`` under ``kid`` (replacing any key of that kid)."""
        self._keys[kid] = key

    def remove(self, kid: str) -> None:
        """Stop accepting tokens signed with ``kid``."""
        self._keys.pop(kid, None)


class _FetchFailed(Exception):
    pass


class JwksKeySource:
    """Auth's public keys from its JWKS endpoint, cached in memory.

    - The first ``get`` fetches the JWKS; later calls for known kids never wait on the network.
    - An unknown kid refetches, at most once per ``min_refetch_interval`` seconds (after a
      failed fetch: at most once per ``min(5, min_refetch_interval)`` seconds), one fetch
      shared by every concurrent caller. Within the interval an unknown kid is simply
      unknown (None).
    - Keys older than ``max_age`` are refetched on the next lookup so a key auth stopped
      publishing stops verifying even when no new kid shows up.
    - A failed fetch keeps the cached keys. It raises ``AuthUnavailable`` only when the
      requested kid is not cached (the token may be valid; we cannot tell).
    - A JWKS without a single usable Ed25519 key counts as a failed fetch rather than
      wiping the cache (a broken auth deployment must not log everybody out).

    ``clock`` is monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        jwks_url: str,
        http: httpx.AsyncClient,
        *,
        min_refetch_interval: float = 60.0,
        max_age: float = 600.0,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_url = jwks_url
        self._http = http
        self._min_refetch_interval = min_refetch_interval
        self._retry_after_failure = min(5.0, min_refetch_interval)
        self._max_age = max_age
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failing = False
        self._lock = asyncio.Lock()

    @property
    def kids(self) -> frozenset[str]:
        """The kids currently cached."""
        return frozenset(self._keys)

    @property
    def last_success_age(self) -> float | None:
        """Seconds since the JWKS was last fetched successfully (None: never)."""
        return None if self._fetched_at is None else self._clock() - self._fetched_at

    async def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key for ``kid``; see the class docstring for when this fetches."""
        key = self._keys.get(kid)
        if key is not None:
            if not self._is_stale() or self._lock.locked():
                return key
            async with self._lock:
                if self._is_stale() and self._may_fetch():
                    with contextlib.suppress(_FetchFailed):  # keep the keys we have
                        await self._refresh()
                return self._keys.get(kid)
        async with self._lock:
            key = self._keys.get(kid)
            if key is not None:
                return key
            if self._may_fetch():
                try:
                    await self._refresh()
                except _FetchFailed as exc:
                    raise AuthUnavailable("Signing keys cannot be fetched right now.") from exc
                return self._keys.get(kid)
            if self._failing:
                raise AuthUnavailable("Signing keys cannot be fetched right now.")
            return None

    def _is_stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age

    def _may_fetch(self) -> bool:
        if self._attempted_at is None:
            return True
        interval = self._retry_after_failure if self._failing else self._min_refetch_interval
        return self._clock() - self._attempted_at >= interval

    async def _refresh(self) -> None:
        self._attempted_at = self._clock()
        try:
            keys = await self._fetch()
        except _FetchFailed as exc:
            if not self._failing:
                logger.warning("JWKS fetch from %s failed: %s", self.jwks_url, exc)
            self._failing = True
            raise
        if self._failing:
            logger.info("JWKS fetch from %s works again", self.jwks_url)
        if keys.keys() != self._keys.keys():
            logger.info("JWKS keys: %s", ", ".join(sorted(keys)))
        self._keys = keys
        self._fetched_at = self._attempted_at
        self._failing = False

    async def _fetch(self) -> dict[str, Ed25519PublicKey]:
        try:
            response = await self._http.get(
                self.jwks_url, timeout=self._timeout, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise _FetchFailed(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise _FetchFailed(f"HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise _FetchFailed("JWKS document too large")
        try:
            keys = usable_keys(response.json())
        except ValueError as exc:
            raise _FetchFailed(f"invalid JWKS document: {exc}") from exc
        if not keys:
            raise _FetchFailed("JWKS has no usable Ed25519 key")
        return keys
