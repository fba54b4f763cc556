"""The pipeline service's outbox table and a helper to emit audit events."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.outbox import AuditEvent, OutboxEventMixin, enqueue
from flightdeck_pipeline.db import Base


class OutboxEvent(OutboxEventMixin, Base):
    __tablename__ = "outbox"


async def audit(
    session: AsyncSession,
    event_type: str,
    *,
    actor: str | None,
    subject: str | None = None,
    ip: str | None = None,
    **data: Any,
) -> None:
    """Record a ``pipeline.*`` audit event in the current transaction."""
    event = AuditEvent(
        type=f"pipeline.{event_type}",
        service="pipeline",
        actor=actor,
        subject=subject,
        ip=ip,
        data=data,
    )
    await enqueue(session, OutboxEvent, event)
