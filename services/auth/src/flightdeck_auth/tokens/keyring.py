"""The Ed25519 signing keys: created once, persisted (sealed), rotated on demand.

Every replica reads the keys from the database; ``current`` signs, ``previous`` keys are
still published in the JWKS until the tokens they signed have expired.
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

from flightdeck_auth.security.secret_box import SecretBox
from flightdeck_auth.tokens.models import SigningKey
from flightdeck_common.auth.keys import load_jwk, public_jwk
from flightdeck_common.db import utcnow

logger = logging.getLogger(__name__)

CURRENT, PREVIOUS, NEXT, RETIRED = "current", "previous", "next", "retired"
# A new key is published this long before it signs, so every service's JWKS cache
# (refetched at most once a minute on an unknown kid) already knows it.
PUBLISH_AHEAD = timedelta(seconds=90)
RELOAD_SECONDS = 30.0
KEY_LOCK_ID = 0x466C646B  # serializes key creation/rotation across replicas (PostgreSQL)


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
        self._sessionmaker = sessionmaker
        self._box = box
        self._current: LoadedKey | None = None
        self._published: dict[str, LoadedKey] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._retire_after = retire_after

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

    async def _promote_due(self) -> None:
        """Make a due ``next`` key current; retire previous keys past their grace."""
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
                .where(
                    SigningKey.status == PREVIOUS, SigningKey.rotated_at < now - self._retire_after
                )
                .values(status=RETIRED)
            )
            await session.execute(
                update(SigningKey)
                .where(SigningKey.status == CURRENT)
                .values(status=PREVIOUS, rotated_at=now)
            )
            due.status = CURRENT
            logger.info("signing key %s is now current", due.kid)

    async def maintain(self) -> None:
        """Promote a due key and reload. Runs in the background, never inside a request
        (a write from a second connection would wait on the request's own transaction
        on SQLite)."""
        await self._promote_due()
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
                jwk = json.loads(row.public_jwk)
                private = None
                if row.status == CURRENT:
                    pem = self._box.open(row.private_key).encode()
                    loaded = serialization.load_pem_private_key(pem, password=None)
                    assert isinstance(loaded, Ed25519PrivateKey)
                    private = loaded
                key = LoadedKey(row.kid, private, load_jwk(jwk), jwk)
                published[row.kid] = key
                if row.status == CURRENT:
                    current = key
            if current is None:
                raise RuntimeError("no current signing key; run the service once to create it")
            self._current, self._published = current, published
            self._loaded_at = time.monotonic()

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
        private_key=box.seal(pem),
        public_jwk=json.dumps(public_jwk(private.public_key(), kid)),
        created_at=utcnow(),
    )


async def _lock_keys(session: AsyncSession) -> None:
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": KEY_LOCK_ID})
