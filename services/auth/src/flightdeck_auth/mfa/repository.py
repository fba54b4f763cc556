"""Single-use MFA challenges (the ``mfa_token`` of a password login)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from flightdeck_auth.mfa.models import MfaChallenge
from flightdeck_auth.tokens.refresh import hash_token, new_opaque_token
from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase


@dataclass(frozen=True, slots=True)
class ChallengeAttempt:
    """One counted attempt on a challenge: whose it is and how many it has now."""

    challenge_id: int
    user_id: int
    attempts: int


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

    async def claim_attempt(self, token: str, max_attempts: int) -> ChallengeAttempt | None:
        """Count one attempt on the challenge, if it is unexpired, unused and has attempts
        left: one conditional ``UPDATE ... RETURNING``, so concurrent attempts on one token
        are counted exactly and never more than ``max_attempts`` get through. None when
        the token is unknown, used, expired or out of attempts."""
        row = (
            await self.session.execute(
                update(MfaChallenge)
                .where(
                    MfaChallenge.token_hash == hash_token(token),
                    MfaChallenge.used_at.is_(None),
                    MfaChallenge.expires_at > utcnow(),
                    MfaChallenge.failed_attempts < max_attempts,
                )
                .values(failed_attempts=MfaChallenge.failed_attempts + 1)
                .returning(MfaChallenge.id, MfaChallenge.user_id, MfaChallenge.failed_attempts)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if row is None:
            return None
        return ChallengeAttempt(challenge_id=row[0], user_id=row[1], attempts=row[2])

    async def attempts(self, token: str) -> int | None:
        """Attempts counted on the challenge of ``token`` (None: no such challenge)."""
        return await self.session.scalar(
            select(MfaChallenge.failed_attempts).where(MfaChallenge.token_hash == hash_token(token))
        )

    async def spend(self, challenge_id: int) -> bool:
        """Mark used; False when a concurrent request spent it first."""
        result = await self.session.execute(
            update(MfaChallenge)
            .where(MfaChallenge.id == challenge_id, MfaChallenge.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1
