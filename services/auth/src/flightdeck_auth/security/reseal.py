"""Re-sealing secrets at rest under the secret box's current key, bound to their rows.

Run at startup and by ``flightdeck-auth rotate-keys``: values sealed under a previous
``SECRET_KEY`` or in the unbound ``v1:`` format are sealed anew, so an old key can be
dropped from ``PREVIOUS_SECRET_KEYS`` once a pass reports nothing left under it. Each
write is conditional on the value it read, so a concurrent change (a user enrolling a
new TOTP device, another replica re-sealing) is never overwritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_auth.security.secret_box import (
    TOTP_SECRET_COLUMN,
    SecretBox,
    SecretBoxError,
    row_binding,
)
from flightdeck_auth.tokens.keyring import reseal_private_key
from flightdeck_auth.tokens.models import SigningKey
from flightdeck_auth.users.models import User

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


@dataclass
class ResealReport:
    """How many values were re-sealed, and how many could not be opened (left as they are)."""

    resealed: int = 0
    unreadable: int = 0


async def reseal_secrets(
    sessionmaker: async_sessionmaker[AsyncSession], box: SecretBox
) -> ResealReport:
    """Re-seal every signing key and TOTP secret that :meth:`SecretBox.needs_reseal`."""
    report = ResealReport()
    if not box.encrypts:
        return report
    async with sessionmaker() as session, session.begin():
        for key in (await session.scalars(select(SigningKey))).all():
            try:
                fresh = reseal_private_key(box, key)
            except SecretBoxError:
                report.unreadable += 1
                continue
            if fresh is not None:
                result = await session.execute(
                    update(SigningKey)
                    .where(SigningKey.kid == key.kid, SigningKey.private_key == key.private_key)
                    .values(private_key=fresh)
                )
                report.resealed += _count(result)
    last_id = 0
    while True:
        async with sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    select(User.id, User.totp_secret)
                    .where(User.id > last_id, User.totp_secret.is_not(None))
                    .order_by(User.id)
                    .limit(BATCH_SIZE)
                )
            ).all()
            for user_id, sealed in rows:
                if sealed is None or not box.needs_reseal(sealed):
                    continue
                binding = row_binding(TOTP_SECRET_COLUMN, user_id)
                try:
                    secret = box.open(sealed, bound_to=binding)
                except SecretBoxError:
                    report.unreadable += 1
                    continue
                result = await session.execute(
                    update(User)
                    .where(User.id == user_id, User.totp_secret == sealed)
                    .values(totp_secret=box.seal(secret, bound_to=binding))
                )
                report.resealed += _count(result)
        if len(rows) < BATCH_SIZE:
            break
        last_id = rows[-1][0]
    if report.resealed or report.unreadable:
        logger.info(
            "secret box: re-sealed %d values under the current key; %d could not be opened",
            report.resealed,
            report.unreadable,
        )
    return report


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
