"""SQL of the deliveries API: pages and reads without the bodies, and reprocessing
(setting deliveries back to pending, for the mapping workers to take again)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, func, select, update

from flightdeck_common.repository import RepositoryBase
from flightdeck_pipeline.webhooks.models import PENDING, Delivery

# What the API shows of a delivery: every column but the body, whose size is computed by
# the database (a page never loads the bodies, up to 25 MB each).
READ_COLUMNS = (
    Delivery.id,
    Delivery.delivery_id,
    Delivery.event,
    Delivery.action,
    Delivery.result,
    Delivery.error,
    Delivery.attempts,
    Delivery.received_at,
    Delivery.processed_at,
    Delivery.retry_at,
    func.length(Delivery.body).label("body_size"),
)
# Pending again: mapped as if just received; attempts are kept (they count every try).
_BACK_TO_PENDING: dict[str, Any] = {
    "result": PENDING,
    "error": None,
    "retry_at": None,
    "processed_at": None,
}


@dataclass(frozen=True)
class DeliveryFilter:
    """Deliveries by result, event and time received (``since`` <= received_at < ``until``)."""

    result: str | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.result is not None:
            clauses.append(Delivery.result == self.result)
        if self.event is not None:
            clauses.append(Delivery.event == self.event)
        if self.since is not None:
            clauses.append(Delivery.received_at >= self.since)
        if self.until is not None:
            clauses.append(Delivery.received_at < self.until)
        return clauses


@dataclass(frozen=True)
class MatchCount:
    """How many deliveries a filter matches, and the largest key among them."""

    rows: int
    last_pk: int | None


class DeliveryQueries(RepositoryBase[Delivery]):
    model = Delivery

    def _read(self) -> Select[Any]:
        return select(*READ_COLUMNS)

    async def page(
        self, selection: DeliveryFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[Row[Any]], str | None]:
        """A page of deliveries, newest first, as plain rows of ``READ_COLUMNS``."""
        statement = self._read().where(*selection.clauses())
        return await self.paginate_rows(
            statement, order_by=[Delivery.id], limit=limit, cursor=cursor
        )

    async def by_delivery_id(self, delivery_id: str) -> Row[Any] | None:
        """One delivery as a row of ``READ_COLUMNS`` (None when it is not stored)."""
        result = await self.session.execute(self._read().where(Delivery.delivery_id == delivery_id))
        row: Row[Any] | None = result.first()
        return row

    async def reprocess_one(self, delivery_id: str, *, previous_result: str) -> bool:
        """Set the delivery back to pending if its result is still ``previous_result``
        (compare and set: a concurrent reprocess makes this one a no-op); whether it did."""
        changed = await self.session.execute(
            update(Delivery)
            .where(
                Delivery.delivery_id == delivery_id,
                Delivery.result == previous_result,
                Delivery.result != PENDING,
            )
            .values(**_BACK_TO_PENDING)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(changed, "rowcount", 0))

    async def count_matching(self, selection: DeliveryFilter) -> MatchCount:
        """How many deliveries that are not pending ``selection`` matches."""
        row = (
            await self.session.execute(
                select(func.count(), func.max(Delivery.id)).where(
                    Delivery.result != PENDING, *selection.clauses()
                )
            )
        ).one()
        return MatchCount(rows=int(row[0] or 0), last_pk=None if row[1] is None else int(row[1]))

    async def reprocess_matching(self, selection: DeliveryFilter, *, up_to_pk: int) -> int:
        """Set the deliveries ``selection`` matches (not pending, key <= ``up_to_pk``: those
        counted, not what arrived since) back to pending, in one UPDATE; how many."""
        changed = await self.session.execute(
            update(Delivery)
            .where(Delivery.result != PENDING, Delivery.id <= up_to_pk, *selection.clauses())
            .values(**_BACK_TO_PENDING)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(changed, "rowcount", 0) or 0)
