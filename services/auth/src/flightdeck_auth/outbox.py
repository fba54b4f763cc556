"""The auth service's outbox table and a helper to emit audit events."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.db import Base
from flightdeck_common.outbox import AuditEvent, OutboxEventMixin, enqueue


class OutboxEvent(OutboxEventMixin, Base):
    __tablename__ = "outbox"


async def audit(
    session: AsyncSession,
    event_type: str,
    *,
    actor: str | None,
    subject: str | None = None,
    request: Request | None = None,
    ip: str | None = None,
    **data: Any,
) -> None:
    """Record an ``auth.*`` audit event in the current transaction."""
    if ip is None and request is not None and request.client is not None:
        ip = request.client.host
    event = AuditEvent(
        type=f"auth.{event_type}", service="auth", actor=actor, subject=subject, ip=ip, data=data
    )
    await enqueue(session, OutboxEvent, event)
