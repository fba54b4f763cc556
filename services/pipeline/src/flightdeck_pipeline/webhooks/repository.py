"""Raw deliveries: stored with their mapping, deduplicated by GitHub's delivery id."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase
from flightdeck_pipeline.webhooks.models import Delivery

PENDING = "pending"

# Built once: executed with a dict of values, they are compiled once, not per delivery.
_TABLE = cast(Table, Delivery.__table__)
_STORE = {
    "postgresql": postgresql.insert(_TABLE).on_conflict_do_nothing(index_elements=["delivery_id"]),
    "sqlite": sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["delivery_id"]),
}
_RESULT_OF = select(Delivery.result).where(Delivery.delivery_id == bindparam("delivery_id"))


class DeliveryRepository(RepositoryBase[Delivery]):
    model = Delivery

    async def store(
        self,
        delivery_id: str,
        event: str,
        action: str | None,
        body: bytes,
        *,
        result: str = PENDING,
    ) -> bool:
        """Store a delivery; False when this delivery id was already stored (redelivery).

        ``result`` other than ``pending``: stored as processed once already (its mapping
        is in the same transaction), which spares a :meth:`finish` when that is the outcome.
        """
        dialect = self.session.get_bind().dialect.name
        now = utcnow()
        finished = result != PENDING
        stored = await self.session.execute(
            _STORE[dialect],
            {
                "delivery_id": delivery_id,
                "event": event,
                "action": action,
                "body": body,
                "received_at": now,
                "result": result,
                "error": None,
                "processed_at": now if finished else None,
                "attempts": 1 if finished else 0,
            },
        )
        return bool(getattr(stored, "rowcount", 0))

    async def by_delivery_id(self, delivery_id: str) -> Delivery | None:
        return await self.session.scalar(
            select(Delivery).where(Delivery.delivery_id == delivery_id)
        )

    async def result_of(self, delivery_id: str) -> str | None:
        """The stored result of a delivery (None when it is not stored)."""
        return await self.session.scalar(_RESULT_OF, {"delivery_id": delivery_id})

    async def finish(self, delivery_id: str, result: str, error: str | None = None) -> None:
        await self.session.execute(
            update(Delivery)
            .where(Delivery.delivery_id == delivery_id)
            .values(
                result=result,
                error=error[:4000] if error else None,
                processed_at=utcnow(),
                attempts=Delivery.attempts + 1,
            )
        )

    async def purge_older_than(self, days: int) -> int:
        result = await self.session.execute(
            delete(Delivery).where(Delivery.received_at < utcnow() - timedelta(days=days))
        )
        return int(getattr(result, "rowcount", 0) or 0)
