"""SQL of the audit log: the chain head, appends, keyset reads for lists, stream and verify."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, update

from flightdeck_admin.audit.models import AuditChainHead, AuditEventRow
from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase

HEAD_ID = 1
# Event ids per ``IN (...)`` query: far below every backend's bound-parameter limit.
ID_LOOKUP_CHUNK = 500


class ChainHead(NamedTuple):
    """The end of the chain: the last ``seq`` appended (0 when empty) and its hash."""

    seq: int
    hash: str


class AuditRepository(RepositoryBase[AuditEventRow]):
    model = AuditEventRow

    async def lock_head(self) -> ChainHead:
        """Write the head row and return it: the write lock every append takes first.

        On PostgreSQL the ``UPDATE`` takes the row lock (a concurrent appender waits here
        until the holder commits, then sees its head); on SQLite the write opens the
        database's single write transaction. Either way it is held until commit.
        """
        statement = (
            update(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .values(updated_at=utcnow())
            .returning(AuditChainHead.seq, AuditChainHead.hash)
            .execution_options(synchronize_session=False)
        )
        row = (await self.session.execute(statement)).one_or_none()
        if row is None:
            raise RuntimeError("audit_chain_head has no row 1: run the admin migrations")
        return ChainHead(int(row.seq), str(row.hash))

    async def read_head(self) -> ChainHead:
        """The head as last committed (no lock)."""
        row = (
            await self.session.execute(
                select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == HEAD_ID)
            )
        ).one_or_none()
        if row is None:
            raise RuntimeError("audit_chain_head has no row 1: run the admin migrations")
        return ChainHead(int(row.seq), str(row.hash))

    async def move_head(self, head: ChainHead) -> None:
        await self.session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == HEAD_ID)
            .values(seq=head.seq, hash=head.hash, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    async def rehash_row(self, seq: int, prev_hash: str, row_hash: str) -> None:
        await self.session.execute(
            update(AuditEventRow)
            .where(AuditEventRow.seq == seq)
            .values(prev_hash=prev_hash, hash=row_hash)
            .execution_options(synchronize_session=False)
        )

    async def stored_event_ids(self, event_ids: Collection[str]) -> set[str]:
        """Those of ``event_ids`` already in the chain."""
        wanted = list(event_ids)
        found: set[str] = set()
        for start in range(0, len(wanted), ID_LOOKUP_CHUNK):
            chunk = wanted[start : start + ID_LOOKUP_CHUNK]
            result = await self.session.scalars(
                select(AuditEventRow.event_id).where(AuditEventRow.event_id.in_(chunk))
            )
            found.update(result.all())
        return found

    async def insert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(AuditEventRow), list(rows))

    async def chain_slice(self, after_seq: int, up_to_seq: int, limit: int) -> list[AuditEventRow]:
        """Rows with ``after_seq < seq <= up_to_seq``, in chain order, at most ``limit``."""
        result = await self.session.scalars(
            select(AuditEventRow)
            .where(AuditEventRow.seq > after_seq, AuditEventRow.seq <= up_to_seq)
            .order_by(AuditEventRow.seq)
            .limit(limit)
        )
        return list(result.all())

    async def chain_seqs(self, after_seq: int, up_to_seq: int, limit: int) -> list[int]:
        """Only the positions of :meth:`chain_slice` (reads no other column)."""
        result = await self.session.scalars(
            select(AuditEventRow.seq)
            .where(AuditEventRow.seq > after_seq, AuditEventRow.seq <= up_to_seq)
            .order_by(AuditEventRow.seq)
            .limit(limit)
        )
        return [int(seq) for seq in result.all()]

    async def first_seq_after(self, seq: int) -> int | None:
        value = await self.session.scalar(
            select(func.min(AuditEventRow.seq)).where(AuditEventRow.seq > seq)
        )
        return int(value) if value is not None else None

    async def page(
        self,
        *,
        types: Iterable[str] | None = None,
        actor: str | None = None,
        service: str | None = None,
        since: datetime | None = None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[AuditEventRow], str | None]:
        """Newest first by ``seq``; each filter is served by an index ending in ``seq``."""
        statement = select(AuditEventRow)
        if types is not None:
            statement = statement.where(AuditEventRow.type.in_(list(types)))
        if actor is not None:
            statement = statement.where(AuditEventRow.actor == actor)
        if service is not None:
            statement = statement.where(AuditEventRow.service == service)
        if since is not None:
            statement = statement.where(AuditEventRow.occurred_at >= since)
        return await self.paginate(
            statement, order_by=[AuditEventRow.seq], limit=limit, cursor=cursor
        )

    async def events_after(
        self,
        seq: int,
        limit: int,
        *,
        event_type: str | None = None,
        service: str | None = None,
    ) -> list[AuditEventRow]:
        """Up to ``limit`` rows after ``seq``, oldest first (the stream's reads)."""
        statement = select(AuditEventRow).where(AuditEventRow.seq > seq)
        if event_type is not None:
            statement = statement.where(AuditEventRow.type == event_type)
        if service is not None:
            statement = statement.where(AuditEventRow.service == service)
        result = await self.session.scalars(statement.order_by(AuditEventRow.seq).limit(limit))
        return list(result.all())
