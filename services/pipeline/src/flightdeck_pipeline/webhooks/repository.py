"""Raw deliveries: stored at acceptance, claimed and finished by the mapping workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite

from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase
from flightdeck_pipeline.webhooks.models import FAILED, PENDING, Delivery

_TABLE = cast(Table, Delivery.__table__)
# A literal, not a parameter: the planner can then use the partial index of pending rows.
IS_PENDING = Delivery.result == literal_column("'pending'")
_READY = IS_PENDING & ((Delivery.retry_at.is_(None)) | (Delivery.retry_at <= bindparam("now")))

# Built once: executed with a list of value dicts (one INSERT of many rows, RETURNING the
# ids that were new: a conflicting one is a redelivery).
_STORE = {
    dialect: insert(_TABLE)
    .on_conflict_do_nothing(index_elements=["delivery_id"])
    .returning(_TABLE.c.delivery_id)
    for dialect, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
_CLAIMED_COLUMNS = (
    Delivery.id,
    Delivery.delivery_id,
    Delivery.event,
    Delivery.body,
    Delivery.received_at,
    Delivery.attempts,
)


@dataclass(frozen=True)
class NewDelivery:
    """A verified delivery as the acceptance path stores it."""

    delivery_id: str
    event: str
    action: str | None
    body: bytes
    result: str  # pending (to be mapped) or ignored (an event Flightdeck does not map)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A pending delivery a worker holds (locked until its transaction ends)."""

    pk: int
    delivery_id: str
    event: str
    body: bytes
    received_at: datetime
    attempts: int


class DeliveryRepository(RepositoryBase[Delivery]):
    model = Delivery

    # -- acceptance ----------------------------------------------------------------------

    async def store_many(self, deliveries: Sequence[NewDelivery]) -> set[str]:
        """Insert ``deliveries`` (distinct ids) in one statement; the ids that were new.

        Rows go in in delivery-id order: two replicas storing copies of the same deliveries
        at once then wait on each other's unique-index entries in one order, never in a
        cycle (a deadlock would fail every delivery of both commits)."""
        dialect = self.session.get_bind().dialect.name
        now = utcnow()
        rows = [
            {
                "delivery_id": d.delivery_id,
                "event": d.event,
                "action": d.action,
                "body": d.body,
                "received_at": now,
                "result": d.result,
                "error": None,
                "processed_at": None if d.result == PENDING else now,
                "attempts": 0,
                "retry_at": None,
            }
            for d in sorted(deliveries, key=lambda d: d.delivery_id)
        ]
        stored = await self.session.execute(_STORE[dialect], rows)
        return set(stored.scalars())

    async def results_of(self, delivery_ids: Sequence[str]) -> dict[str, str]:
        """The stored result of each of ``delivery_ids`` that is stored."""
        rows = await self.session.execute(
            select(Delivery.delivery_id, Delivery.result).where(
                Delivery.delivery_id.in_(delivery_ids)
            )
        )
        return {row.delivery_id: row.result for row in rows}

    async def requeue_failed(self, delivery: NewDelivery) -> bool:
        """A redelivery of a delivery kept as failed: pending again, with the body sent now.
        False when it is not failed (any more)."""
        requeued = await self.session.execute(
            update(Delivery)
            .where(Delivery.delivery_id == delivery.delivery_id, Delivery.result == FAILED)
            .values(
                result=PENDING,
                body=delivery.body,
                action=delivery.action,
                error=None,
                retry_at=None,
                processed_at=None,
            )
        )
        return bool(getattr(requeued, "rowcount", 0))

    # -- the queue -----------------------------------------------------------------------

    async def claim(self, limit: int) -> list[ClaimedDelivery]:
        """Take up to ``limit`` pending deliveries in arrival order, counting the attempt.

        On PostgreSQL the rows stay locked until the transaction ends and rows another
        worker holds are skipped (``FOR UPDATE SKIP LOCKED``): replicas share the queue
        and never map one delivery at the same time. On SQLite (one worker) the statement
        takes the database's write lock at once. A rollback undoes the claim.
        """
        ready = (
            select(Delivery.id)
            .where(_READY)
            .order_by(Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return await self._claim(Delivery.id.in_(ready.scalar_subquery()))

    async def claim_one(self, pk: int) -> ClaimedDelivery | None:
        """Take the delivery ``pk`` if it is still pending and no other worker holds it."""
        ready = (
            select(Delivery.id).where(Delivery.id == pk, _READY).with_for_update(skip_locked=True)
        )
        claimed = await self._claim(Delivery.id.in_(ready.scalar_subquery()))
        return claimed[0] if claimed else None

    async def _claim(self, which: Any) -> list[ClaimedDelivery]:
        rows = await self.session.execute(
            update(Delivery)
            .where(which)
            .values(attempts=Delivery.attempts + 1)
            .returning(*_CLAIMED_COLUMNS),
            {"now": utcnow()},
        )
        claimed = [
            ClaimedDelivery(
                pk=row.id,
                delivery_id=row.delivery_id,
                event=row.event,
                body=row.body,
                received_at=row.received_at,
                attempts=row.attempts,
            )
            for row in rows
        ]
        return sorted(claimed, key=lambda delivery: delivery.pk)

    async def finish_many(self, outcomes: Sequence[tuple[int, str, str | None]]) -> None:
        """Record ``(pk, result, error)`` of claimed deliveries (one executemany)."""
        if not outcomes:
            return
        now = utcnow()
        await self.session.execute(
            update(_TABLE)
            .where(_TABLE.c.id == bindparam("pk"))
            .values(
                result=bindparam("result"),
                error=bindparam("error"),
                processed_at=now,
                retry_at=None,
            ),
            [
                {"pk": pk, "result": result, "error": error[:4000] if error else None}
                for pk, result, error in outcomes
            ],
        )

    async def fail(self, pk: int, error: str) -> None:
        """Finish a delivery as failed after its mapping was rolled back (the attempt with it)."""
        await self.session.execute(
            update(Delivery)
            .where(Delivery.id == pk, IS_PENDING)
            .values(
                result=FAILED,
                error=error[:4000],
                processed_at=utcnow(),
                retry_at=None,
                attempts=Delivery.attempts + 1,
            )
        )

    async def postpone(self, pk: int, error: str, retry_at: datetime) -> None:
        """Leave the delivery pending after an unexpected error, not tried before ``retry_at``."""
        await self.session.execute(
            update(Delivery)
            .where(Delivery.id == pk, IS_PENDING)
            .values(error=error[:4000], retry_at=retry_at, attempts=Delivery.attempts + 1)
        )

    async def backlog(self) -> tuple[int, datetime | None]:
        """Pending deliveries and the arrival time of the oldest (both from the partial
        index of pending rows)."""
        count = await self.session.scalar(select(func.count(Delivery.id)).where(IS_PENDING))
        oldest = await self.session.scalar(
            select(Delivery.received_at).where(IS_PENDING).order_by(Delivery.id).limit(1)
        )
        return int(count or 0), oldest

    async def ready_count(self) -> int:
        """Pending deliveries a worker may take now (not postponed)."""
        count = await self.session.scalar(
            select(func.count(Delivery.id)).where(_READY), {"now": utcnow()}
        )
        return int(count or 0)

    # -- reads and retention -------------------------------------------------------------

    async def by_delivery_id(self, delivery_id: str) -> Delivery | None:
        return await self.session.scalar(
            select(Delivery).where(Delivery.delivery_id == delivery_id)
        )

    async def purge_older_than(self, days: int) -> int:
        """Drop finished deliveries received more than ``days`` ago (pending ones stay)."""
        result = await self.session.execute(
            delete(Delivery).where(
                Delivery.received_at < utcnow() - timedelta(days=days), ~IS_PENDING
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)
