"""Single-use MFA challenges (the ``mfa_token`` of a password login)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from flightdeck_auth.mfa.models import MfaChallenge
from flightdeck_auth.tokens.refresh import hash_token, new_opaque_token
from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase


class MfaChallengeRepository(RepositoryBase[MfaChallenge]):
    model = MfaChallenge

    async def create(self, user_id: int, ip: str | None, ttl_seconds: int) -> str:
        token = new_opaque_token()
        now = utcnow()
        self.session.add(
            MfaChallenge(
                token_hash=hash_token(token),
                user_id=user_id,
                ip=ip,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_seconds),
                failed_attempts=0,
            )
        )
        await self.session.flush()
        return token

    async def usable(self, token: str, max_attempts: int) -> MfaChallenge | None:
        """The challenge if it is unexpired, unused and has attempts left."""
        challenge = await self.session.scalar(
            select(MfaChallenge).where(MfaChallenge.token_hash == hash_token(token))
        )
        if (
            challenge is None
            or challenge.used_at is not None
            or challenge.expires_at <= utcnow()
            or challenge.failed_attempts >= max_attempts
        ):
            return None
        return challenge

    async def spend(self, challenge: MfaChallenge) -> bool:
        """Mark used; False when a concurrent request spent it first."""
        result = await self.session.execute(
            update(MfaChallenge)
            .where(MfaChallenge.id == challenge.id, MfaChallenge.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1
