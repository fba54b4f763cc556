"""The hash chain: how an event is hashed, appended (idempotently) and verified.

Row ``n`` stores ``hash = HMAC-SHA256(chain_key, prev_hash + canonical_json(chained_fields(row)))``
with ``prev_hash`` the hash of row ``n - 1`` (:data:`GENESIS_HASH` for row 1) and the chain
key a secret admin's database does not hold (see ``audit.keys``): a rewritten chain cannot
be re-hashed without it, and it is also detected against a head published earlier. Every column that
says what happened is chained, so editing any of them, deleting a row or reordering rows
breaks the chain from that row on; ``recorded_at`` (when admin stored it) is not chained.

Appends serialize in the database (the chain head's row lock), never in the process: any
number of admin replicas and relays may append at once. A transaction that appends holds
that lock until it commits, so rows also become visible in ``seq`` order, without gaps.
"""

from __future__ import annotations

import hashlib
import hmac
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


def event_hash(prev_hash: str, fields: Mapping[str, Any], key: bytes) -> str:
    """``HMAC-SHA256(key, prev_hash + canonical_json(fields))`` as 64 hex digits."""
    message = (prev_hash + canonical_json(fields)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def unkeyed_event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The hash of rows written before the chain was keyed: ``sha256(prev_hash + ...)``."""
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
    session: AsyncSession, events: Sequence[AuditEvent], *, source: str, key: bytes
) -> AppendResult:
    """Chain ``events`` (in the given order) within the caller's transaction.

    Idempotent by event id: ids already stored, or seen earlier in the batch, are skipped
    and counted as duplicates. The chain head stays locked until the caller commits; a
    rollback leaves the chain as it was. ``source`` is who submitted the batch (the
    service account's client id), recorded and chained with each row; ``key`` is the
    chain key.
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
        row["hash"] = prev_hash = event_hash(prev_hash, chained_fields(row), key)
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


class ChainNotRekeyable(Exception):
    """The chain is broken (by more than missing keys): rekeying would launder it."""


async def rekey_chain(
    session: AsyncSession, *, key: bytes, batch: int = DEFAULT_VERIFY_BATCH
) -> int:
    """Re-hash the chain with ``key``, once, after upgrading to the keyed chain.

    Holds the head lock. Each row must verify as it is (unkeyed, or already keyed with
    ``key``) against its stored links, or nothing changes and :class:`ChainNotRekeyable`
    says where it breaks. Returns how many rows were re-hashed.
    """
    repository = AuditRepository.from_session(session)
    head = await repository.lock_head()
    old_prev = new_prev = GENESIS_HASH
    rehashed = 0
    expected = 0
    async for row in _chain_rows(repository, head.seq, batch):
        expected += 1
        if isinstance(row, _UnreadableRow) or row.seq != expected:
            raise ChainNotRekeyable(f"row {expected} is missing or unreadable")
        if row.prev_hash != old_prev:
            raise ChainNotRekeyable(f"row {row.seq} does not link to the previous row")
        fields = chained_fields(row)
        if row.hash not in (
            unkeyed_event_hash(old_prev, fields),
            event_hash(old_prev, fields, key),
        ):
            raise ChainNotRekeyable(f"row {row.seq} was modified (hash mismatch)")
        new_hash = event_hash(new_prev, fields, key)
        if (row.prev_hash, row.hash) != (new_prev, new_hash):
            await repository.rehash_row(row.seq, new_prev, new_hash)
            rehashed += 1
        old_prev, new_prev = row.hash, new_hash
    if expected != head.seq or old_prev != head.hash:
        raise ChainNotRekeyable("the chain head does not name the last row")
    await repository.move_head(ChainHead(head.seq, new_prev))
    return rehashed


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify_chain`: ``checked`` rows were found intact before the
    first broken one (``first_invalid_seq``; its event id when the row exists)."""

    valid: bool
    checked: int
    first_invalid_seq: int | None = None
    first_invalid_id: str | None = None
    first_invalid_source: str | None = None
    reason: str | None = None
    anchor_matched: bool | None = None


@dataclass(frozen=True, slots=True)
class _UnreadableRow:
    seq: int


async def verify_chain(
    session: AsyncSession,
    *,
    key: bytes,
    batch: int = DEFAULT_VERIFY_BATCH,
    anchor: ChainHead | None = None,
) -> VerifyResult:
    """Walk the chain in ``seq`` order, ``batch`` rows per query, and report the first break.

    ``anchor`` is a head published earlier (its ``seq`` and ``hash``): the chain must still
    contain it, or it was rewritten since (``anchor_matched`` is False and the result
    invalid). Without the chain key a rewrite cannot be re-hashed; with it (a stolen key),
    the anchor still detects it.

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
    if anchor is not None:
        rewritten = await _anchor_problem(repository, head, anchor)
        if rewritten is not None:
            return rewritten
    async for row in _chain_rows(repository, head.seq, batch):
        expected = checked + 1
        if row.seq != expected:
            return _broken(checked, expected, None, f"row {expected} is missing")
        if isinstance(row, _UnreadableRow):
            return _broken(checked, row.seq, None, f"row {row.seq} cannot be read")
        reason = _row_problem(row, prev_hash, key)
        if reason is not None:
            return _broken(checked, row.seq, row.event_id, reason, row.source)
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
    return VerifyResult(
        valid=True, checked=checked, anchor_matched=None if anchor is None else True
    )


async def _anchor_problem(
    repository: AuditRepository, head: ChainHead, anchor: ChainHead
) -> VerifyResult | None:
    """The rewrite report when the chain no longer holds ``anchor`` (None when it does)."""
    if anchor.seq == 0:
        return None if anchor.hash == GENESIS_HASH else _rewritten(anchor, "not the genesis hash")
    if anchor.seq > head.seq:
        return _rewritten(anchor, f"the chain now ends at {head.seq}")
    try:
        rows = await repository.chain_slice(anchor.seq - 1, anchor.seq, 1)
    except (ValueError, TypeError):
        return _rewritten(anchor, f"row {anchor.seq} cannot be read")
    if not rows or rows[0].seq != anchor.seq:
        return _rewritten(anchor, f"row {anchor.seq} is missing")
    if not hmac.compare_digest(rows[0].hash, anchor.hash):
        return _rewritten(anchor, f"row {anchor.seq} now has hash {rows[0].hash}", row=rows[0])
    return None


def _row_problem(row: AuditEventRow, prev_hash: str, key: bytes) -> str | None:
    if row.prev_hash != prev_hash:
        return f"row {row.seq} does not link to the previous row (prev_hash)"
    try:
        fields = chained_fields(row)
        recomputed = event_hash(prev_hash, fields, key)
    except (ValueError, TypeError, RecursionError):
        return f"row {row.seq} cannot be hashed (data is not JSON)"
    if recomputed == row.hash:
        return None
    if unkeyed_event_hash(prev_hash, fields) == row.hash:
        return (
            f"row {row.seq} is hashed without the chain key (written before the chain was "
            "keyed, or re-hashed by someone without the key; see `flightdeck-admin "
            "rekey-audit-chain`)"
        )
    return f"row {row.seq} was modified (hash mismatch)"


def _broken(
    checked: int,
    seq: int | None,
    event_id: str | None,
    reason: str,
    source: str | None = None,
) -> VerifyResult:
    return VerifyResult(
        valid=False,
        checked=checked,
        first_invalid_seq=seq,
        first_invalid_id=event_id,
        first_invalid_source=source,
        reason=reason,
    )


def _rewritten(
    anchor: ChainHead, detail: str, checked: int = 0, row: AuditEventRow | None = None
) -> VerifyResult:
    return VerifyResult(
        valid=False,
        checked=checked,
        first_invalid_seq=anchor.seq,
        first_invalid_id=None if row is None else row.event_id,
        first_invalid_source=None if row is None else row.source,
        reason=(
            f"the chain was rewritten: it does not contain the published head "
            f"(seq {anchor.seq}, hash {anchor.hash}): {detail}"
        ),
        anchor_matched=False,
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
