"""Rules of the deliveries API and CLI: read stored deliveries, reprocess them (audited).

Reprocessing sets a delivery back to ``pending``; the mapping workers then map it again
(idempotent: upserts, and a run's log line is written once per delivery). The caller
commits, then wakes the worker of its process; workers elsewhere find it when they poll.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.errors import Conflict, FlightdeckError, NotFound
from flightdeck_common.pagination import Page
from flightdeck_pipeline.outbox import audit
from flightdeck_pipeline.webhooks.deliveries_repository import DeliveryFilter, DeliveryQueries
from flightdeck_pipeline.webhooks.deliveries_schemas import (
    BulkReprocess,
    BulkReprocessResult,
    DeliveryRead,
)
from flightdeck_pipeline.webhooks.models import PENDING
from flightdeck_pipeline.webhooks.repository import DeliveryRepository

# At most this many deliveries per bulk reprocess: one UPDATE of a bounded size (and a
# backlog the workers drain in minutes, not hours). More is refused, with the count, so
# the caller narrows the filter (since/until) instead of requeueing a random part of it.
MAX_BULK_REPROCESS = 100_000


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"
    title = "Delivery not found"


class DeliveryPending(Conflict):
    code = "delivery_pending"
    title = "The delivery is already pending"


class TooManyDeliveries(FlightdeckError):
    status_code = 422
    code = "too_many_deliveries"
    title = "Too many deliveries match for one reprocess"
    example_members: ClassVar[dict[str, Any]] = {"matched": 250_000, "limit": MAX_BULK_REPROCESS}


class BacklogWouldOverflow(Conflict):
    code = "backlog_would_overflow"
    title = "Reprocessing these would fill the delivery backlog"
    example_members: ClassVar[dict[str, Any]] = {"matched": 80_000, "room": 20_000}


def _read(row: Any) -> DeliveryRead:
    return DeliveryRead.model_validate(row._asdict())


async def list_deliveries(
    session: AsyncSession, selection: DeliveryFilter, *, limit: int, cursor: str | None
) -> Page[DeliveryRead]:
    """A page of deliveries, newest first."""
    rows, next_cursor = await DeliveryQueries(session).page(selection, limit=limit, cursor=cursor)
    return Page[DeliveryRead](items=[_read(row) for row in rows], next_cursor=next_cursor)


async def get_delivery(session: AsyncSession, delivery_id: str) -> DeliveryRead:
    row = await DeliveryQueries(session).by_delivery_id(delivery_id)
    if row is None:
        raise DeliveryNotFound(f"No delivery {delivery_id!r} is stored.")
    return _read(row)


async def reprocess_delivery(
    session: AsyncSession, delivery_id: str, *, actor: str
) -> DeliveryRead:
    """Set one delivery back to pending (not when it is already), audited."""
    deliveries = DeliveryQueries(session)
    current = await get_delivery(session, delivery_id)
    if current.result == PENDING or not await deliveries.reprocess_one(
        delivery_id, previous_result=current.result.value
    ):
        raise DeliveryPending(f"Delivery {delivery_id!r} is already waiting to be mapped.")
    await audit(
        session,
        "webhook.delivery_reprocessed",
        actor=actor,
        subject=delivery_id,
        delivery_id=delivery_id,
        event=current.event,
        previous_result=current.result.value,
    )
    return await get_delivery(session, delivery_id)


async def reprocess_deliveries(
    session: AsyncSession, request: BulkReprocess, *, actor: str, backlog_limit: int
) -> BulkReprocessResult:
    """Set every delivery ``request`` selects back to pending in one UPDATE, audited once;
    refused (nothing changed) when more than ``MAX_BULK_REPROCESS`` match, or when they
    would take the backlog to ``backlog_limit``, where GitHub's new deliveries are refused."""
    selection = DeliveryFilter(
        result=request.result, event=request.event, since=request.since, until=request.until
    )
    deliveries = DeliveryQueries(session)
    matched = await deliveries.count_matching(selection)
    if matched.rows > MAX_BULK_REPROCESS:
        raise TooManyDeliveries(
            f"{matched.rows} deliveries match, more than {MAX_BULK_REPROCESS} per call: "
            "narrow the filter (event, since, until) and call again.",
            matched=matched.rows,
            limit=MAX_BULK_REPROCESS,
        )
    pending, _ = await DeliveryRepository(session).backlog()
    room = max(0, backlog_limit - 1 - pending)
    if matched.rows > room:
        raise BacklogWouldOverflow(
            f"{matched.rows} deliveries match, and {pending} are already pending: "
            f"reprocessing them would reach the backlog bound ({backlog_limit}), past which "
            "GitHub's new deliveries are refused. Narrow the filter, or wait for the backlog "
            "to drain.",
            matched=matched.rows,
            room=room,
        )
    reprocessed = 0
    if matched.last_pk is not None:
        reprocessed = await deliveries.reprocess_matching(selection, up_to_pk=matched.last_pk)
    await audit(
        session,
        "webhook.deliveries_reprocessed",
        actor=actor,
        filter={
            "result": request.result,
            "event": request.event,
            "since": request.since.isoformat() if request.since else None,
            "until": request.until.isoformat() if request.until else None,
        },
        count=reprocessed,
    )
    return BulkReprocessResult(reprocessed=reprocessed)
