"""Raw deliveries: stored before mapping, deduplicated by GitHub's delivery id."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update

from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase
from flightdeck_common.upsert import insert_for
from flightdeck_pipeline.webhooks.models import Delivery


class DeliveryRepository(RepositoryBase[Delivery]):
    model = Delivery

    async def store(self, delivery_id: str, event: str, action: str | None, body: bytes) -> bool:
        """Store a delivery; False when this delivery id was already stored (redelivery)."""
        insert = insert_for(self.session, Delivery.__table__).values(
            delivery_id=delivery_id,
            event=event,
            action=action,
            body=body,
            received_at=utcnow(),
            result="pending",
            attempts=0,
        )
        result = await self.session.execute(
            insert.on_conflict_do_nothing(index_elements=["delivery_id"])
        )
        return bool(getattr(result, "rowcount", 0))

    async def by_delivery_id(self, delivery_id: str) -> Delivery | None:
        return await self.session.scalar(
            select(Delivery).where(Delivery.delivery_id == delivery_id)
        )

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
