"""Refresh tokens: opaque, stored hashed, rotated on every use; reuse revokes the family.

A family (the tokens of one login) has an absolute lifetime: no token of it is valid past
``family_max_age`` after the family's first token, however often it is refreshed.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.tokens.models import RefreshToken
from flightdeck_common.db import utcnow

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    """SHA-256 of a high-entropy token: enough to store it (no password-style hashing)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_opaque_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class RotationResult:
    """``token`` is set on success; ``reused`` when a spent token came back;
    ``family_expired`` when its family outlived its absolute lifetime (now revoked)."""

    user_id: int | None
    token: str | None = None
    family_id: str | None = None
    reused: bool = False
    family_expired: bool = False


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def issue(
        self,
        user_id: int,
        ttl_seconds: int,
        family_id: str | None = None,
        *,
        not_after: datetime | None = None,
    ) -> str:
        """A new token (of a new family unless ``family_id``), valid for ``ttl_seconds`` but
        never past ``not_after`` (the family's end)."""
        token = new_opaque_token()
        now = utcnow()
        expires_at = now + timedelta(seconds=ttl_seconds)
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        self.session.add(
            RefreshToken(
                token_hash=hash_token(token),
                family_id=family_id or str(uuid.uuid4()),
                user_id=user_id,
                created_at=now,
                expires_at=expires_at,
            )
        )
        await self.session.flush()
        return token

    async def by_token(self, token: str) -> RefreshToken | None:
        return await self.session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == hash_token(token))
        )

    async def family_started_at(self, family_id: str) -> datetime | None:
        return await self.session.scalar(
            select(func.min(RefreshToken.created_at)).where(RefreshToken.family_id == family_id)
        )

    async def rotate(
        self, token: str, ttl_seconds: int, family_max_age_seconds: int
    ) -> RotationResult | None:
        """Spend ``token`` and issue its successor in the same family.

        Returns None for an unknown, expired or revoked token; ``family_expired`` for one
        whose family is older than ``family_max_age_seconds`` (the family is then revoked,
        in the caller's transaction: commit it). Spending is a
        conditional UPDATE, so two concurrent uses of one token cannot both succeed: the
        loser is treated as reuse.
        """
        row = await self.by_token(token)
        now = utcnow()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            return None
        started_at = await self.family_started_at(row.family_id) or row.created_at
        family_ends_at = _as_utc(started_at) + timedelta(seconds=family_max_age_seconds)
        if family_ends_at <= now:
            await self.revoke_family(row.family_id, "family_expired")
            return RotationResult(user_id=row.user_id, family_id=row.family_id, family_expired=True)
        spent = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
        if getattr(spent, "rowcount", 0) != 1:
            await self.revoke_family(row.family_id, "reuse_detected")
            return RotationResult(user_id=row.user_id, family_id=row.family_id, reused=True)
        successor = await self.issue(
            row.user_id, ttl_seconds, row.family_id, not_after=family_ends_at
        )
        return RotationResult(user_id=row.user_id, token=successor, family_id=row.family_id)

    async def revoke_family(self, family_id: str, reason: str) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
        )

    async def revoke_user(self, user_id: int, reason: str) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
        )


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back what MIN() saw; UTCDateTime columns read aware, an aggregate may not.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
