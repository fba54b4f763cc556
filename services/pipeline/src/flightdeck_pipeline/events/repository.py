"""SQL of the change events (the live stream's log)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase
from flightdeck_pipeline.events.models import ChangeEvent

# pg_advisory_xact_lock key serializing the writers of change events (any constant works;
# this one spells "fdchange").
APPEND_LOCK_KEY = 0x6664_6368_616E_6765


# Core statements on the table (not ORM inserts of the entity), built once.
_TABLE = cast(Table, ChangeEvent.__table__)
_INSERT = insert(_TABLE).returning(_TABLE.c.id)
# PostgreSQL: the ordering lock and the first insert in one statement (one round trip
# fewer while the lock is held). The lock is taken in a materialized CTE that the insert
# reads its one row from, so the row's id (nextval, computed as the insert produces it)
# is drawn after the lock is held.
_LOCK = (
    select(func.pg_advisory_xact_lock(APPEND_LOCK_KEY).label("locked"))
    .cte("ordering_lock")
    .prefix_with("MATERIALIZED")
)
_LOCKED_INSERT = (
    insert(_TABLE)
    .from_select(
        ["kind", "payload", "created_at"],
        select(
            bindparam("kind", type_=_TABLE.c.kind.type),
            bindparam("payload", type_=_TABLE.c.payload.type),
            bindparam("created_at", type_=_TABLE.c.created_at.type),
        ).select_from(_LOCK),
    )
    .returning(_TABLE.c.id)
)


def append_changes(session: Session, changes: Sequence[tuple[str, str]]) -> list[int]:
    """Insert ``(kind, payload_json)`` change events in order and return their ids.

    Synchronous: it runs inside the commit of an ``AsyncSession`` (SQLAlchemy's greenlet),
    as the last statements of the transaction. On PostgreSQL the first insert also takes a
    transaction-scoped advisory lock, before it draws its id, released by the commit:
    sequence values are handed out at insert, so without it two writers could commit ids
    out of order and a stream that already sent N+1 would skip N. With it, writers insert
    and commit one at a time and ids follow commit order. SQLite needs nothing: it has one
    writer at a time anyway.
    """
    ids: list[int] = []
    postgres = session.get_bind().dialect.name == "postgresql"
    for index, (kind, payload) in enumerate(changes):
        values = {"kind": kind, "payload": payload, "created_at": utcnow()}
        statement = _LOCKED_INSERT if postgres and index == 0 else _INSERT
        ids.append(int(session.execute(statement, values).scalar_one()))
    return ids


class ChangeRow(NamedTuple):
    id: int
    kind: str
    payload: str


class ChangeEventRepository(RepositoryBase[ChangeEvent]):
    model = ChangeEvent

    async def latest_id(self) -> int:
        """The highest id committed (0 when the table is empty)."""
        return int(
            await self.session.scalar(select(func.coalesce(func.max(ChangeEvent.id), 0))) or 0
        )

    async def oldest_id(self) -> int | None:
        value = await self.session.scalar(select(func.min(ChangeEvent.id)))
        return int(value) if value is not None else None

    async def more_than_after(self, after_id: int, count: int) -> bool:
        """Whether more than ``count`` events follow ``after_id`` (reads at most count + 1 ids)."""
        statement = (
            select(ChangeEvent.id)
            .where(ChangeEvent.id > after_id)
            .order_by(ChangeEvent.id)
            .offset(count)
            .limit(1)
        )
        return (await self.session.scalar(statement)) is not None

    async def list_after(self, after_id: int, limit: int) -> list[ChangeRow]:
        """Up to ``limit`` events after ``after_id``, oldest first."""
        result = await self.session.execute(
            select(ChangeEvent.id, ChangeEvent.kind, ChangeEvent.payload)
            .where(ChangeEvent.id > after_id)
            .order_by(ChangeEvent.id)
            .limit(limit)
        )
        return [ChangeRow(int(id_), kind, payload) for id_, kind, payload in result.all()]

    async def prune(self, *, keep_last: int, older_than: datetime) -> int:
        """Delete events that are both beyond the replay bound and older than ``older_than``
        (a reconnecting client behind them gets a ``reset``, as it would anyway)."""
        cutoff = await self.latest_id() - keep_last
        if cutoff <= 0:
            return 0
        result = await self.session.execute(
            delete(ChangeEvent).where(ChangeEvent.id <= cutoff, ChangeEvent.created_at < older_than)
        )
        return int(getattr(result, "rowcount", 0) or 0)
