"""Deliveries seeded as rows (not through the receiver) for the deliveries API and CLI
tests, and what a reprocessed one looks like.

A mapping worker may run in the app: it takes pending deliveries whose ``retry_at`` is
past, so pending seeds carry a ``retry_at`` far ahead (left alone), and what a test
reprocesses is asserted as "pending, or mapped again since" — true with or without a
worker, false when nothing was done.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from flightdeck_common.db import utcnow
from flightdeck_pipeline.outbox import OutboxEvent
from flightdeck_pipeline.webhooks.models import Delivery

from ..conftest import FIXTURES, PipelineHarness

# Recent: the app purges finished deliveries past their retention (7 days at least).
T0 = (utcnow() - timedelta(hours=3)).replace(microsecond=0)
SEEDED_AT = T0 + timedelta(minutes=30)
NOT_BEFORE = datetime(2999, 1, 1, tzinfo=UTC)  # a pending seed no worker takes
RUN_BODY = (FIXTURES / "workflow_run" / "completed.payload.json").read_bytes()
# A workflow_run the mapper refuses (no run fields): mapped again, it fails again.
UNMAPPABLE_RUN = json.dumps({"action": "completed", "workflow_run": {}}).encode()


def seeded_delivery(delivery_id: str, *, body: bytes, error: str, **fields: Any) -> Delivery:
    """A stored delivery (``failed`` with ``error`` unless ``result`` says otherwise)."""
    result = fields.pop("result", "failed")
    values: dict[str, Any] = {
        "event": "workflow_run",
        "action": "completed",
        "received_at": T0,
        "body": body,
        "result": result,
        "error": error if result == "failed" else None,
        "processed_at": None if result == "pending" else SEEDED_AT,
        "attempts": 0 if result == "pending" else 1,
        "retry_at": NOT_BEFORE if result == "pending" else None,
        **fields,
    }
    return Delivery(delivery_id=delivery_id, **values)


async def seed(harness: PipelineHarness, *deliveries: Delivery) -> None:
    """Insert the rows one by one (their ids, hence the API's order, follow the arguments)."""
    async with harness.app.state.resources.sessionmaker.begin() as session:
        for delivery in deliveries:
            session.add(delivery)
            await session.flush()


async def stored(harness: PipelineHarness, delivery_id: str) -> Delivery:
    async with harness.app.state.resources.sessionmaker() as session:
        row = await session.scalar(select(Delivery).where(Delivery.delivery_id == delivery_id))
        assert row is not None
        return row


async def audit_payloads(harness: PipelineHarness, event_type: str) -> list[dict[str, Any]]:
    async with harness.app.state.resources.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.event_type == event_type)
        )
        return [json.loads(row) for row in rows]


def assert_reprocessed(row: Delivery, seeded_error: str) -> None:
    """Set back to pending by the call; a worker may have mapped it again since (then it is
    finished anew after the seeded time: processed, ignored — an event Flightdeck does not
    map —, or failed with the mapper's error)."""
    if row.result == "pending":
        assert (row.error, row.processed_at, row.retry_at) == (None, None, None)
        return
    assert row.result in ("processed", "ignored", "failed")
    assert row.error != seeded_error
    assert row.processed_at is not None
    assert row.processed_at > SEEDED_AT
