"""Transactional outbox: audit events written in the same transaction as the change.

Each service maps :class:`OutboxEventMixin` onto its own ``outbox`` table; code that
changes state calls :func:`enqueue` with the request's session, so the event is
committed or rolled back together with the change. A relay delivers pending rows to
the admin service (see the admin issue); until then they wait, visible in the table.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from sqlalchemy import Integer, String, Text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from flightdeck_common.db import UTCDateTime, utcnow
from flightdeck_common.logging import request_id_var


class AuditEvent(BaseModel):
    """One audit event as services emit it and the admin service chains it."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str = Field(max_length=100, examples=["auth.login.succeeded"])
    service: str = Field(max_length=40)
    actor: str | None = Field(None, max_length=200, description="Who acted (username, svc:x).")
    subject: str | None = Field(None, max_length=200, description="What was acted on.")
    occurred_at: datetime = Field(default_factory=utcnow)
    ip: str | None = Field(None, max_length=64)
    request_id: str | None = Field(None, max_length=128)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("actor", "subject", "ip", "request_id", mode="before")
    @classmethod
    def _truncate(cls, value: Any, info: ValidationInfo) -> Any:
        # Audit must never fail the change it records: long names are cut, not refused.
        limit = {"actor": 200, "subject": 200, "ip": 64, "request_id": 128}[info.field_name or ""]
        return value[:limit] if isinstance(value, str) else value


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for storage and hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class OutboxEventMixin:
    """Columns of a service's ``outbox`` table (map it with ``__tablename__ = "outbox"``)."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)


async def enqueue(session: AsyncSession, model: type[OutboxEventMixin], event: AuditEvent) -> None:
    """Add ``event`` to the outbox within the session's transaction."""
    if event.request_id is None:
        event.request_id = request_id_var.get()
    row = model()
    row.id = event.id
    row.event_type = event.type
    row.payload = canonical_json(event.model_dump(mode="json"))
    row.created_at = event.occurred_at
    row.attempts = 0
    session.add(row)


class Auditor:
    """A service's ``audit(session, "login.failed", actor=..., **data)``: builds the event
    (type prefixed with the service name) and enqueues it in the session's transaction."""

    def __init__(self, model: type[OutboxEventMixin], service: str) -> None:
        self.model = model
        self.service = service

    async def __call__(
        self,
        session: AsyncSession,
        event_type: str,
        *,
        actor: str | None,
        subject: str | None = None,
        ip: str | None = None,
        **data: Any,
    ) -> None:
        event = AuditEvent(
            type=f"{self.service}.{event_type}",
            service=self.service,
            actor=actor,
            subject=subject,
            ip=ip,
            data=data,
        )
        await enqueue(session, self.model, event)
