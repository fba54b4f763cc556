"""Admin's own outbox relay: its events join the chain in process, without an HTTP hop."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import ValidationError

from flightdeck_admin.audit.chain import append_events
from flightdeck_admin.audit.head import keys_of
from flightdeck_admin.audit.schemas import AuditEventIn
from flightdeck_admin.outbox import OutboxEvent
from flightdeck_common.db import session_scope
from flightdeck_common.outbox_lifespan import outbox_relay_lifespan
from flightdeck_common.outbox_relay import OutboxDeliveryError, Sender
from flightdeck_common.resources import Resources
from flightdeck_common.service_app import LifespanHook

OWN_SOURCE = "admin"


def _append_in_process(app: FastAPI, resources: Resources, http: httpx.AsyncClient) -> Sender:
    key = keys_of(app).chain_key

    async def send(events: list[dict[str, Any]]) -> None:
        try:
            parsed = [AuditEventIn.model_validate(event) for event in events]
        except ValidationError as exc:  # refused for good, like the HTTP route's 422
            raise OutboxDeliveryError(f"invalid audit event: {exc}", 422) from exc
        async with session_scope(resources.sessionmaker) as session:
            await append_events(session, parsed, source=OWN_SOURCE, key=key)

    return send


def admin_outbox_lifespan() -> LifespanHook:
    """The relay of admin's ``outbox`` table into admin's own audit chain."""
    return outbox_relay_lifespan(OutboxEvent, _append_in_process)
