"""Change events for the live stream: the id is the SSE event id (resumable)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from flightdeck_common.db import UTCDateTime, utcnow
from flightdeck_pipeline.db import Base


class ChangeEvent(Base):
    __tablename__ = "change_events"
    # Ids are SSE event ids: SQLite must never reuse one after a delete.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # run.updated, deployment.updated
    payload: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
