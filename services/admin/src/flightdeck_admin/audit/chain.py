"""The hash chain: how an event is hashed, appended (idempotently) and verified.

Row ``n`` stores ``hash = sha256(prev_hash + canonical_json(chained_fields(row)))`` with
``prev_hash`` the hash of row ``n - 1`` (:data:`GENESIS_HASH` for row 1). Every column that
says what happened is chained, so editing any of them, deleting a row or reordering rows
breaks the chain from that row on; ``recorded_at`` (when admin stored it) is not chained.

Appends serialize in the database (the chain head's row lock), never in the process: any
number of admin replicas and relays may append at once. A transaction that appends holds
that lock until it commits, so rows also become visible in ``seq`` order, without gaps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_admin.audit.models import GENESIS_HASH, AuditEventRow
from flightdeck_admin.audit.repository import AuditRepository, ChainHead
from flightdeck_common.db import utcnow
from flightdeck_common.outbox import AuditEvent, canonical_json

DEFAULT_VERIFY_BATCH = 1000


def format_timestamp(moment: datetime) -> str:
    """The one text form of a chained timestamp: UTC, microseconds, ``+00:00``.

    A value read back from SQLite or PostgreSQL formats exactly as it did when hashed.
    Naive values are taken as UTC (the columns store UTC).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def chained_fields(source: AuditEventRow | Mapping[str, Any]) -> dict[str, Any]:
    """What the hash of a row covers, from a stored row or the column values of a new one.

    ``data`` is the stored canonical JSON text, parsed (raises ``ValueError`` if it is not
    JSON): the hash covers the object, not a particular spelling of it.
    """
    if isinstance(source, Mapping):
        column = source.__getitem__
    else:

        def column(name: str) -> Any:
            return getattr(source, name)

    return {
        "seq": int(column("seq")),
        "id": column("event_id"),
        "type": column("type"),
        "service": column("service"),
        "source": column("source"),
        "actor": column("actor"),
        "subject": column("subject"),
        "occurred_at": format_timestamp(column("occurred_at")),
        "ip": column("ip"),
        "request_id": column("request_id"),
        "data": json.loads(column("data")),
    }


def event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """``sha256(prev_hash + canonical_json(fields))`` as 64 hex digits."""
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: ``accepted`` new rows at ``first_seq..last_seq`` (None when no
    row was added) and ``duplicates`` events skipped (already stored, or repeated in the
    batch)."""

    accepted: int
    duplicates: int
    first_seq: int | None = None
    last_seq: int | None = None


async def append_events(
    session: AsyncSession, events: Sequence[AuditEvent], *, source: str
) -> AppendResult:
    """Chain ``events`` (in the given order) within the caller's transaction.

    Idempotent by event id: ids already stored, or seen earlier in the batch, are skipped
    and counted as duplicates. The chain head stays locked until the caller commits; a
    rollback leaves the chain as it was. ``source`` is who submitted the batch (the
    service account's client id), recorded and chained with each row.
    """
    if not events:
        return AppendResult(accepted=0, duplicates=0)
    repository = AuditRepository.from_session(session)
    head = await repository.lock_head()  # first: everything below reads a settled chain
    unique: dict[str, AuditEvent] = {}
    for event in events:
        unique.setdefault(event.id, event)
    stored = await repository.stored_event_ids(unique.keys())
    recorded_at = utcnow()
    rows: list[dict[str, Any]] = []
    seq, prev_hash = head
    for event_id, event in unique.items():
        if event_id in stored:
            continue
        seq += 1
        row = _column_values(event, seq=seq, source=source, recorded_at=recorded_at)
        row["prev_hash"] = prev_hash
        row["hash"] = prev_hash = event_hash(prev_hash, chained_fields(row))
        rows.append(row)
    if not rows:
        return AppendResult(accepted=0, duplicates=len(events))
    await repository.insert_rows(rows)
    await repository.move_head(ChainHead(seq, prev_hash))
    return AppendResult(
        accepted=len(rows),
        duplicates=len(events) - len(rows),
        first_seq=head.seq + 1,
        last_seq=seq,
    )


def _column_values(
    event: AuditEvent, *, seq: int, source: str, recorded_at: datetime
) -> dict[str, Any]:
    occurred_at = event.occurred_at
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    return {
        "seq": seq,
        "event_id": event.id,
        "type": event.type,
        "service": event.service,
        "source": source,
        "actor": event.actor,
        "subject": event.subject,
        "occurred_at": occurred_at.astimezone(UTC),
        "recorded_at": recorded_at,
        "ip": event.ip,
        "request_id": event.request_id,
        "data": canonical_json(event.data),
    }


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify_chain`: ``checked`` rows were found intact before the
    first broken one (``first_invalid_seq``; its event id when the row exists)."""

    valid: bool
    checked: int
    first_invalid_seq: int | None = None
    first_invalid_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _UnreadableRow:
    seq: int


async def verify_chain(session: AsyncSession, batch: int = DEFAULT_VERIFY_BATCH) -> VerifyResult:
    """Walk the chain in ``seq`` order, ``batch`` rows per query, and report the first break.

    Checks that positions run 1, 2, 3... without gaps, that each row's ``prev_hash`` is the
    previous row's ``hash``, that each ``hash`` matches the row's columns, and that the
    chain head names the last row (rows deleted at the end). The chain is verified up to
    the head as read at the start, so appends meanwhile do not disturb it.
    """
    if batch < 1:
        raise ValueError("batch must be positive")
    repository = AuditRepository.from_session(session)
    head = await repository.read_head()
    checked = 0
    prev_hash = GENESIS_HASH
    last_id: str | None = None
    async for row in _chain_rows(repository, head.seq, batch):
        expected = checked + 1
        if row.seq != expected:
            return _broken(checked, expected, None, f"row {expected} is missing")
        if isinstance(row, _UnreadableRow):
            return _broken(checked, row.seq, None, f"row {row.seq} cannot be read")
        reason = _row_problem(row, prev_hash)
        if reason is not None:
            return _broken(checked, row.seq, row.event_id, reason)
        checked += 1
        prev_hash, last_id = row.hash, row.event_id
    if checked < head.seq:
        missing = checked + 1
        return _broken(
            checked, missing, None, f"rows {missing} to {head.seq} are missing (chain head)"
        )
    if prev_hash != head.hash:
        return _broken(
            checked, head.seq or None, last_id, "the chain head's hash is not the last row's"
        )
    beyond = await repository.first_seq_after(head.seq)
    if beyond is not None and beyond > (await repository.read_head()).seq:
        return _broken(checked, beyond, None, f"row {beyond} lies beyond the chain head")
    return VerifyResult(valid=True, checked=checked)


def _row_problem(row: AuditEventRow, prev_hash: str) -> str | None:
    if row.prev_hash != prev_hash:
        return f"row {row.seq} does not link to the previous row (prev_hash)"
    try:
        recomputed = event_hash(prev_hash, chained_fields(row))
    except (ValueError, TypeError, RecursionError):
        return f"row {row.seq} cannot be hashed (data is not JSON)"
    if recomputed != row.hash:
        return f"row {row.seq} was modified (hash mismatch)"
    return None


def _broken(checked: int, seq: int | None, event_id: str | None, reason: str) -> VerifyResult:
    return VerifyResult(
        valid=False,
        checked=checked,
        first_invalid_seq=seq,
        first_invalid_id=event_id,
        reason=reason,
    )


async def _chain_rows(
    repository: AuditRepository, up_to_seq: int, batch: int
) -> AsyncIterator[AuditEventRow | _UnreadableRow]:
    """Rows ``1..up_to_seq`` in order, ``batch`` per query; a row whose stored values do
    not load (only possible when edited by hand on SQLite) comes as ``_UnreadableRow``."""
    after = 0
    while after < up_to_seq:
        try:
            rows = await repository.chain_slice(after, up_to_seq, batch)
        except (ValueError, TypeError):
            # Read this batch row by row to find the culprit (only ever on a tampered table).
            rows = []
            for seq in await repository.chain_seqs(after, up_to_seq, batch):
                try:
                    rows.extend(await repository.chain_slice(seq - 1, seq, 1))
                except (ValueError, TypeError):
                    for row in rows:
                        yield row
                    yield _UnreadableRow(seq)
                    return
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].seq
