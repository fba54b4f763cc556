"""Revoking access tokens: the revocation table is the truth; Redis (when configured)
spreads it to every service at once, the internal feed does it without Redis."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_auth.tokens.models import Revocation
from flightdeck_common.auth.claims import TokenClaims
from flightdeck_common.auth.revocation import RedisRevocations
from flightdeck_common.db import utcnow

logger = logging.getLogger(__name__)


class RevocationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, *, jti: str | None, subject: str | None, expires_at: datetime, reason: str
    ) -> Revocation:
        row = Revocation(
            jti=jti, subject=subject, revoked_at=utcnow(), expires_at=expires_at, reason=reason
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def feed(self, after: int, limit: int) -> Sequence[Revocation]:
        statement = (
            select(Revocation)
            .where(Revocation.id > after, Revocation.expires_at > utcnow())
            .order_by(Revocation.id)
            .limit(limit)
        )
        return (await self.session.scalars(statement)).all()

    async def is_revoked(self, jti: str, subject: str, issued_at: datetime) -> bool:
        statement = select(Revocation.id).where(
            Revocation.expires_at > utcnow(),
            or_(
                Revocation.jti == jti,
                (Revocation.subject == subject) & (Revocation.revoked_at >= issued_at),
            ),
        )
        return (await self.session.scalar(statement.limit(1))) is not None

    async def purge_expired(self) -> int:
        result = await self.session.execute(
            delete(Revocation).where(Revocation.expires_at < utcnow() - timedelta(days=1))
        )
        return int(getattr(result, "rowcount", 0) or 0)


class Revoker:
    """Writes revocations (in the caller's transaction) and mirrors them to Redis."""

    def __init__(self, redis: RedisRevocations | None, access_ttl_seconds: int) -> None:
        self.redis = redis
        self.access_ttl = timedelta(seconds=access_ttl_seconds)

    async def revoke_token(
        self, session: AsyncSession, jti: str, expires_at: datetime, reason: str
    ) -> None:
        await RevocationRepository(session).add(
            jti=jti, subject=None, expires_at=expires_at, reason=reason
        )
        if self.redis is not None:
            await self.redis.revoke_jti(jti, expires_at)

    async def revoke_subject(self, session: AsyncSession, subject: str, reason: str) -> None:
        """Invalidate every access token of ``subject`` issued until now."""
        now = utcnow()
        row = await RevocationRepository(session).add(
            jti=None, subject=subject, expires_at=now + self.access_ttl, reason=reason
        )
        if self.redis is not None:
            await self.redis.revoke_subject(subject, row.revoked_at, self.access_ttl)


class DatabaseRevocations:
    """RevocationChecker for auth's own routes: asks the revocation table directly."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def is_revoked(self, claims: TokenClaims) -> bool:
        async with self.sessionmaker() as session:
            return await RevocationRepository(session).is_revoked(
                claims.jti, claims.sub, claims.issued_at
            )
