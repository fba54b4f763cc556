"""Audit log tables: the chained events and the one-row chain head.

``audit_events.seq`` is the position in the chain (1, 2, 3... without gaps);
``hash = HMAC-SHA256(chain key, prev_hash || canonical JSON of the event)`` (see
``audit.chain``).
``audit_chain_head`` holds the last ``seq`` and ``hash``; every append locks that row
first, so appends are serialized across processes and replicas by the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from flightdeck_admin.db import Base
from flightdeck_common.db import UTCDateTime, utcnow

GENESIS_HASH = "0" * 64


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    event_id: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    service: Mapped[str] = mapped_column(String(40), nullable=False)
    source: Mapped[str] = mapped_column(
        String(64), nullable=False, doc="Who submitted it: the service account's client id."
    )
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    data: Mapped[str] = mapped_column(Text, nullable=False, doc="canonical JSON object")
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)

    __table_args__ = (
        Index("ix_audit_events_type_seq", "type", "seq"),
        Index("ix_audit_events_actor_seq", "actor", "seq"),
        Index("ix_audit_events_service_seq", "service", "seq"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )


class AuditChainHead(Base):
    """Exactly one row (id = 1): the end of the chain, locked by every append."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, default=GENESIS_HASH)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
