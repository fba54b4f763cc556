"""The published chain head: signed with admin's own Ed25519 key, served and logged.

Signed message: ``"{seq}:{hash}:{signed_at}"`` (``signed_at`` as in the published head,
ISO 8601 UTC). An operator keeps published heads outside admin's database (the log line
each signing writes, or ``GET /admin/audit-events/head``); verifying against an earlier one
reports a rewrite when the chain no longer contains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Request

from flightdeck_admin.audit.chain import format_timestamp
from flightdeck_admin.audit.keys import ChainKeys, chain_keys
from flightdeck_admin.audit.repository import AuditRepository, ChainHead
from flightdeck_common.db import session_scope
from flightdeck_common.resources import Resources

logger = logging.getLogger(__name__)

KEYS_STATE = "audit_keys"


@dataclass(frozen=True, slots=True)
class SignedHead:
    seq: int
    hash: str
    signed_at: str
    signature: str
    public_key: str


def head_message(seq: int, head_hash: str, signed_at: str) -> str:
    return f"{seq}:{head_hash}:{signed_at}"


def sign_head(keys: ChainKeys, head: ChainHead, now: datetime | None = None) -> SignedHead:
    signed_at = format_timestamp(now or datetime.now(UTC))
    return SignedHead(
        seq=head.seq,
        hash=head.hash,
        signed_at=signed_at,
        signature=keys.sign(head_message(head.seq, head.hash, signed_at)),
        public_key=keys.public_key_pem,
    )


def published_head_is_ours(
    keys: ChainKeys, seq: int, head_hash: str, signed_at: str, signature: str
) -> bool:
    """Whether admin's signing key signed this head (so it was published, not made up)."""
    return keys.signature_is_valid(head_message(seq, head_hash, signed_at), signature)


def keys_of(app: FastAPI) -> ChainKeys:
    keys: ChainKeys = getattr(app.state, KEYS_STATE)
    return keys


async def request_keys(request: Request) -> ChainKeys:
    """Dependency: the chain keys loaded at startup."""
    return keys_of(request.app)


async def sign_current_head(resources: Resources, keys: ChainKeys) -> SignedHead:
    async with session_scope(resources.sessionmaker) as session:
        head = await AuditRepository.from_session(session).read_head()
    return sign_head(keys, head)


def log_signed_head(signed: SignedHead) -> None:
    """The line an operator keeps elsewhere (its fields are what verify accepts)."""
    logger.info(
        "audit chain head signed: seq=%d hash=%s signed_at=%s signature=%s",
        signed.seq,
        signed.hash,
        signed.signed_at,
        signed.signature,
        extra={
            "audit_head": {
                "seq": signed.seq,
                "hash": signed.hash,
                "signed_at": signed.signed_at,
                "signature": signed.signature,
            }
        },
    )


async def _sign_periodically(resources: Resources, keys: ChainKeys, interval: float) -> None:
    last: tuple[int, str] | None = None
    while True:
        try:
            signed = await sign_current_head(resources, keys)
            if last != (signed.seq, signed.hash):
                log_signed_head(signed)
                last = (signed.seq, signed.hash)
        except Exception:
            logger.exception("signing the audit chain head failed; retrying later")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def audit_head_lifespan(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
    """Load the chain keys (``app.state.audit_keys``) and sign + log the head periodically
    (when it moved since the last line)."""
    keys = chain_keys(resources.settings)  # type: ignore[arg-type]
    setattr(app.state, KEYS_STATE, keys)
    interval = float(getattr(resources.settings, "audit_head_sign_interval_seconds", 300.0))
    task = asyncio.create_task(_sign_periodically(resources, keys, interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
