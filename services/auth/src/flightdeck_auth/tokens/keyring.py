"""The Ed25519 signing keys: created once, persisted (sealed), rotated on demand.

Every replica reads the keys from the database; ``current`` signs, ``previous`` keys are
still published in the JWKS until the tokens they signed have expired (the maintenance
pass retires them then), ``next`` is published ahead of signing. A key is published only
when its sealed private key opens (bound to its kid) and matches its public JWK, so a
public key planted in the table is never trusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_auth.security.secret_box import (
    SIGNING_KEY_COLUMN,
    SecretBox,
    SecretBoxError,
    row_binding,
)
from flightdeck_auth.settings import Settings
from flightdeck_auth.tokens.models import SigningKey
from flightdeck_common.auth.keys import public_jwk
from flightdeck_common.db import utcnow
from flightdeck_common.metrics import counter

logger = logging.getLogger(__name__)

CURRENT, PREVIOUS, NEXT, RETIRED = "current", "previous", "next", "retired"
# A new key is published this long before it signs, so every service's JWKS cache
# (refetched at most once a minute on an unknown kid) already knows it.
PUBLISH_AHEAD = timedelta(seconds=90)
RELOAD_SECONDS = 30.0
KEY_LOCK_ID = 0x466C646B  # serializes key creation/rotation across replicas (PostgreSQL)
# Beyond the longest token lifetime: the verifiers' leeway (10 s) and clock skew.
RETIREMENT_LEEWAY = timedelta(seconds=60)

REFUSED_SIGNING_KEYS = counter(
    "flightdeck_signing_keys_refused_total",
    "Signing key rows not published: their sealed private key does not open (for their "
    "kid) or does not match their public key (a planted or corrupted row).",
)


def key_retirement_delay(settings: Settings) -> timedelta:
    """How long a replaced key stays published: until every token it signed has expired."""
    longest = max(settings.access_token_ttl_seconds, settings.service_token_ttl_seconds)
    return timedelta(seconds=longest) + RETIREMENT_LEEWAY


class UntrustedSigningKey(Exception):
    """A signing key row whose private key does not open or does not match its public key."""


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    private_key: Ed25519PrivateKey | None
    public_key: Ed25519PublicKey
    jwk: dict[str, Any]


class KeyRing:
    """In-memory view of the signing keys, reloaded from the database periodically."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        retire_after: timedelta = timedelta(hours=1),
    ) -> None:
        """``retire_after``: how long a replaced key stays published (see
        :func:`key_retirement_delay`)."""
        self._sessionmaker = sessionmaker
        self._box = box
        self._current: LoadedKey | None = None
        self._published: dict[str, LoadedKey] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._retire_after = retire_after
        self._refused: set[str] = set()  # kids already logged and counted

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self._sessionmaker

    async def ensure_key(self) -> None:
        """Create the first key when there is none (safe with several replicas)."""
        async with self._sessionmaker() as session, session.begin():
            await _lock_keys(session)
            current = await session.scalar(select(SigningKey).where(SigningKey.status == CURRENT))
            if current is None:
                session.add(_new_key(self._box))
                logger.info("created the first signing key")
        await self.reload()

    async def rotate(self, publish_ahead: timedelta = PUBLISH_AHEAD) -> str:
        """Publish a new key now; it starts signing after ``publish_ahead`` (see
        :meth:`maintain`). The key it replaces stays published for ``retire_after``."""
        async with self._sessionmaker() as session, session.begin():
            await _lock_keys(session)
            await session.execute(
                update(SigningKey).where(SigningKey.status == NEXT).values(status=RETIRED)
            )
            key = _new_key(self._box, NEXT)
            key.created_at = utcnow()
            key.rotated_at = key.created_at + publish_ahead  # when it takes over
            session.add(key)
            kid = key.kid
        await self.reload()
        return kid

    async def rotate_revoking_previous(self) -> tuple[str, list[str]]:
        """For a compromised key: a new key signs at once and every other key (current,
        previous, next) is retired now, so the tokens they signed stop verifying (in every
        auth replica at its next maintenance pass, every few seconds; in other services
        when their JWKS cache next refreshes). Returns the new kid and the retired ones."""
        now = utcnow()
        async with self._sessionmaker() as session, session.begin():
            await _lock_keys(session)
            retired = list(
                (
                    await session.scalars(
                        select(SigningKey.kid).where(
                            SigningKey.status.in_((CURRENT, PREVIOUS, NEXT))
                        )
                    )
                ).all()
            )
            await session.execute(
                update(SigningKey)
                .where(SigningKey.status.in_((CURRENT, PREVIOUS, NEXT)))
                .values(status=RETIRED, rotated_at=now)
            )
            key = _new_key(self._box, CURRENT)
            key.created_at = key.rotated_at = now
            session.add(key)
            kid = key.kid
        logger.warning(
            "signing key %s is current; retired at once (revoked): %s", kid, ", ".join(retired)
        )
        await self.reload()
        return kid, retired

    async def _retire_expired(self) -> None:
        """Retire previous keys whose every token has expired (``retire_after`` since they
        stopped signing)."""
        cutoff = utcnow() - self._retire_after
        async with self._sessionmaker() as session, session.begin():
            expired = list(
                (
                    await session.scalars(
                        select(SigningKey.kid).where(
                            SigningKey.status == PREVIOUS, SigningKey.rotated_at < cutoff
                        )
                    )
                ).all()
            )
            if not expired:
                return
            await _lock_keys(session)
            await session.execute(
                update(SigningKey)
                .where(SigningKey.status == PREVIOUS, SigningKey.rotated_at < cutoff)
                .values(status=RETIRED)
            )
        logger.info("retired signing keys whose tokens have expired: %s", ", ".join(expired))

    async def _promote_due(self) -> None:
        """Make a due ``next`` key current (the current one becomes ``previous``)."""
        now = utcnow()
        async with self._sessionmaker() as session, session.begin():
            await _lock_keys(session)
            due = await session.scalar(
                select(SigningKey).where(SigningKey.status == NEXT, SigningKey.rotated_at <= now)
            )
            if due is None:
                return
            await session.execute(
                update(SigningKey)
                .where(SigningKey.status == CURRENT)
                .values(status=PREVIOUS, rotated_at=now)
            )
            due.status = CURRENT
            logger.info("signing key %s is now current", due.kid)

    async def maintain(self) -> None:
        """Promote a due key, retire expired previous keys and reload. Runs in the
        background, never inside a request (a write from a second connection would wait on
        the request's own transaction on SQLite)."""
        await self._promote_due()
        await self._retire_expired()
        await self.reload()

    async def run_maintenance(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.maintain()
            except Exception:
                logger.exception("signing key maintenance failed; retrying")

    async def reload(self) -> None:
        async with self._lock:
            async with self._sessionmaker() as session:
                rows = (
                    await session.scalars(
                        select(SigningKey).where(SigningKey.status.in_((CURRENT, PREVIOUS, NEXT)))
                    )
                ).all()
            published: dict[str, LoadedKey] = {}
            current = None
            for row in rows:
                try:
                    private, jwk = _verified_pair(self._box, row)
                except UntrustedSigningKey as exc:
                    self._refuse(row.kid, str(exc))
                    continue
                key = LoadedKey(
                    row.kid, private if row.status == CURRENT else None, private.public_key(), jwk
                )
                published[row.kid] = key
                if row.status == CURRENT:
                    current = key
            if current is None:
                raise RuntimeError(
                    "no usable current signing key (none, or refused: see the errors above); "
                    "run the service once to create one, or rotate-keys --revoke-previous"
                )
            self._current, self._published = current, published
            self._loaded_at = time.monotonic()

    def _refuse(self, kid: str, reason: str) -> None:
        if kid in self._refused:
            return
        self._refused.add(kid)
        REFUSED_SIGNING_KEYS.inc()
        logger.error("signing key %r is not published: %s", kid, reason)

    async def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at > RELOAD_SECONDS:
            await self.reload()

    async def current(self) -> LoadedKey:
        await self._fresh()
        assert self._current is not None
        return self._current

    async def jwks(self) -> dict[str, list[dict[str, Any]]]:
        await self._fresh()
        return {"keys": [key.jwk for key in self._published.values()]}

    async def get(self, kid: str) -> Ed25519PublicKey | None:
        """KeySource for verifying our own tokens (reloads once on an unknown kid)."""
        key = self._published.get(kid)
        if key is None and time.monotonic() - self._loaded_at > 1.0:
            await self.reload()
            key = self._published.get(kid)
        return key.public_key if key else None


def _binding(kid: str) -> str:
    return row_binding(SIGNING_KEY_COLUMN, kid)


def _verified_pair(box: SecretBox, row: SigningKey) -> tuple[Ed25519PrivateKey, dict[str, Any]]:
    """The row's private key and public JWK, once the sealed key opens for this kid and
    derives exactly the published JWK; :class:`UntrustedSigningKey` otherwise."""
    try:
        pem = box.open(row.private_key, bound_to=_binding(row.kid)).encode()
        private = serialization.load_pem_private_key(pem, password=None)
    except (SecretBoxError, ValueError, TypeError) as exc:
        raise UntrustedSigningKey(f"its sealed private key does not open ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise UntrustedSigningKey("its private key is not an Ed25519 key")
    try:
        jwk = json.loads(row.public_jwk)
    except ValueError:
        raise UntrustedSigningKey("its public JWK is not JSON") from None
    if jwk != public_jwk(private.public_key(), row.kid):
        raise UntrustedSigningKey("its public JWK does not match its private key")
    return private, jwk


def reseal_private_key(box: SecretBox, row: SigningKey) -> str | None:
    """The row's private key sealed anew (current box key, bound to its kid) when it needs
    it, else None. Raises :class:`SecretBoxError` when it does not open."""
    if not box.needs_reseal(row.private_key):
        return None
    binding = _binding(row.kid)
    return box.seal(box.open(row.private_key, bound_to=binding), bound_to=binding)


def _new_key(box: SecretBox, status: str = CURRENT) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = secrets.token_urlsafe(12)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(
        kid=kid,
        status=status,
        private_key=box.seal(pem, bound_to=_binding(kid)),
        public_jwk=json.dumps(public_jwk(private.public_key(), kid)),
        created_at=utcnow(),
    )


async def _lock_keys(session: AsyncSession) -> None:
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": KEY_LOCK_ID})
