"""Every accepted webhook delivery, stored raw at acceptance and mapped behind it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from flightdeck_common.db import UTCDateTime, utcnow
from flightdeck_pipeline.db import Base

PENDING = "pending"
PROCESSED = "processed"
IGNORED = "ignored"
FAILED = "failed"
RESULTS = (PENDING, PROCESSED, IGNORED, FAILED)

_PENDING_ONLY = text("result = 'pending'")


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        # The mapping workers' queue (arrival order) and the backlog count.
        Index(
            "ix_deliveries_pending",
            "id",
            postgresql_where=_PENDING_ONLY,
            sqlite_where=_PENDING_ONLY,
        ),
        # Pages of the deliveries API, newest first, by result or by event.
        Index("ix_deliveries_result_id", "result", "id"),
        Index("ix_deliveries_event_id", "event", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    event: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # pending -> processed | ignored | failed (kept with its error, can be reprocessed);
    # an event Flightdeck does not map is stored ignored at once.
    result: Mapped[str] = mapped_column(String(16), default=PENDING, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Mapping attempts (a transient failure rolls its attempt back with the batch).
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # Pending after an unexpected mapping error: not tried again before this time.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
