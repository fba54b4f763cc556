"""The hash chain itself (``audit.chain``) on SQLite and PostgreSQL: hashing, idempotent
appends, verification and the tampering it detects, concurrent appenders."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_admin.app import MIGRATIONS_DIR
from flightdeck_admin.audit.chain import (
    AppendResult,
    append_events,
    chained_fields,
    event_hash,
    format_timestamp,
    verify_chain,
)
from flightdeck_admin.audit.models import GENESIS_HASH, AuditChainHead, AuditEventRow
from flightdeck_admin.settings import Settings
from flightdeck_common.db import create_engine, create_sessionmaker, session_scope
from flightdeck_common.migrations import upgrade_to_head
from flightdeck_common.outbox import AuditEvent

Sessions = async_sessionmaker[AsyncSession]
CHAIN_KEY = b"a chain key the database does not hold, for tests"


def events_of(new_event: Any, count: int, **overrides: Any) -> list[AuditEvent]:
    return [AuditEvent.model_validate(new_event(**overrides)) for _ in range(count)]


async def append(sessions: Sessions, events: list[AuditEvent], source: str = "pipeline") -> Any:
    async with session_scope(sessions) as session:
        return await append_events(session, events, source=source, key=CHAIN_KEY)


async def verify(sessions: Sessions, batch: int = 1000) -> Any:
    async with sessions() as session:
        return await verify_chain(session, key=CHAIN_KEY, batch=batch)


async def rows(sessions: Sessions) -> list[AuditEventRow]:
    async with sessions() as session:
        return list((await session.scalars(select(AuditEventRow).order_by("seq"))).all())


async def change(sessions: Sessions, statement: Any) -> None:
    async with session_scope(sessions) as session:
        await session.execute(statement)


async def test_each_hash_is_the_keyed_hmac_of_the_previous_hash_and_the_canonical_fields(
    audit_sessionmaker: Sessions, new_event: Any
) -> None:
    event = AuditEvent.model_validate(
        new_event(occurred_at="2026-11-25T13:00:00.5+01:00", data={"b": 1, "a": [True, None]})
    )
    result = await append(audit_sessionmaker, [event, *events_of(new_event, 1)])
    assert result == AppendResult(accepted=2, duplicates=0, first_seq=1, last_seq=2)

    first, second = await rows(audit_sessionmaker)
    expected_fields = {
        "seq": 1,
        "id": event.id,
        "type": "pipeline.run.created",
        "service": "pipeline",
        "source": "pipeline",
        "actor": "alice",
        "subject": event.subject,
        "occurred_at": "2026-11-25T12:00:00.500000+00:00",
        "ip": "10.0.0.7",
        "request_id": event.request_id,
        "data": {"a": [True, None], "b": 1},
    }
    assert chained_fields(first) == expected_fields
    canonical = json.dumps(
        expected_fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert first.prev_hash == GENESIS_HASH
    message = (GENESIS_HASH + canonical).encode()
    assert first.hash == hmac.new(CHAIN_KEY, message, hashlib.sha256).hexdigest()
    assert second.prev_hash == first.hash
    assert second.hash == event_hash(first.hash, chained_fields(second), CHAIN_KEY)
    assert first.data == '{"a":[true,null],"b":1}'  # stored as canonical JSON

    async with audit_sessionmaker() as session:
        head = await session.get(AuditChainHead, 1)
    assert head is not None
    assert (head.seq, head.hash) == (2, second.hash)


def test_one_timestamp_format_whatever_the_offset_or_naivety() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-01-02T03:04:05.000000+00:00"
    assert format_timestamp(moment.astimezone(timezone_plus(5))) == format_timestamp(moment)
    assert format_timestamp(moment.replace(tzinfo=None)) == format_timestamp(moment)


def timezone_plus(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


async def test_appends_are_idempotent_by_event_id(
    audit_sessionmaker: Sessions, new_event: Any
) -> None:
    batch = events_of(new_event, 3)
    assert (await append(audit_sessionmaker, batch)).accepted == 3
    before = [(r.seq, r.hash) for r in await rows(audit_sessionmaker)]

    again = await append(audit_sessionmaker, batch)
    assert again == AppendResult(accepted=0, duplicates=3)
    assert [(r.seq, r.hash) for r in await rows(audit_sessionmaker)] == before

    # Partly new batch, with an id repeated inside it: only the new one is chained, once.
    fresh = events_of(new_event, 1)[0]
    mixed = await append(audit_sessionmaker, [batch[0], fresh, fresh])
    assert mixed == AppendResult(accepted=1, duplicates=2, first_seq=4, last_seq=4)
    assert (await verify(audit_sessionmaker)).valid
    assert await append(audit_sessionmaker, []) == AppendResult(accepted=0, duplicates=0)


async def test_a_rolled_back_append_leaves_the_chain_as_it_was(
    audit_sessionmaker: Sessions, new_event: Any
) -> None:
    await append(audit_sessionmaker, events_of(new_event, 2))

    async def failing_change() -> None:
        async with session_scope(audit_sessionmaker) as session:
            await append_events(session, events_of(new_event, 2), source="pipeline", key=CHAIN_KEY)
            raise RuntimeError("the caller's change failed")

    with pytest.raises(RuntimeError):
        await failing_change()
    assert [r.seq for r in await rows(audit_sessionmaker)] == [1, 2]
    result = await append(audit_sessionmaker, events_of(new_event, 1))
    assert result.first_seq == 3
    assert (await verify(audit_sessionmaker)).valid


async def test_verify_walks_the_chain_in_batches(
    audit_sessionmaker: Sessions, new_event: Any
) -> None:
    empty = await verify(audit_sessionmaker)
    assert (empty.valid, empty.checked, empty.first_invalid_seq) == (True, 0, None)
    for _ in range(3):
        await append(audit_sessionmaker, events_of(new_event, 3))
    for batch in (1, 2, 4, 1000):
        result = await verify(audit_sessionmaker, batch=batch)
        assert (result.valid, result.checked, result.reason) == (True, 9, None)


TAMPERED_VALUES: dict[str, Any] = {
    "event_id": "forged-id",
    "type": "pipeline.run.deleted",
    "service": "auth",
    "source": "someone",
    "actor": "mallory",
    "subject": "run:999",
    "occurred_at": datetime(2020, 1, 1, tzinfo=UTC),
    "ip": "6.6.6.6",
    "request_id": "req-forged",
    "data": '{"n":1,"nested":{"a":"é","b":[1,2.5,null]},"x":1}',
}


@pytest.mark.parametrize("column", sorted(TAMPERED_VALUES))
async def test_editing_any_chained_column_is_detected_at_that_row(
    audit_sessionmaker: Sessions, new_event: Any, column: str
) -> None:
    await append(audit_sessionmaker, events_of(new_event, 4))
    await change(
        audit_sessionmaker,
        update(AuditEventRow)
        .where(AuditEventRow.seq == 2)
        .values({column: TAMPERED_VALUES[column]}),
    )
    result = await verify(audit_sessionmaker)
    assert not result.valid
    assert (result.first_invalid_seq, result.checked) == (2, 1)
    assert result.first_invalid_id == (await rows(audit_sessionmaker))[1].event_id
    assert "hash mismatch" in (result.reason or "")


async def test_a_rehashed_row_breaks_the_link_of_the_next(
    audit_sessionmaker: Sessions, new_event: Any
) -> None:
    await append(audit_sessionmaker, events_of(new_event, 3))
    second = (await rows(audit_sessionmaker))[1]
    second.actor = "mallory"
    forged = event_hash(second.prev_hash, chained_fields(second), CHAIN_KEY)
    await change(
        audit_sessionmaker,
        update(AuditEventRow).where(AuditEventRow.seq == 2).values(actor="mallory", hash=forged),
    )
    result = await verify(audit_sessionmaker)
    assert (result.valid, result.first_invalid_seq) == (False, 3)
    assert "prev_hash" in (result.reason or "")


async def test_deleted_rows_are_detected(audit_sessionmaker: Sessions, new_event: Any) -> None:
    await append(audit_sessionmaker, events_of(new_event, 4))
    await change(audit_sessionmaker, delete(AuditEventRow).where(AuditEventRow.seq == 4))
    tail = await verify(audit_sessionmaker)
    assert (tail.valid, tail.checked, tail.first_invalid_seq, tail.first_invalid_id) == (
        False,
        3,
        4,
        None,
    )
    assert "missing" in (tail.reason or "")

    await change(audit_sessionmaker, delete(AuditEventRow).where(AuditEventRow.seq == 2))
    middle = await verify(audit_sessionmaker)
    assert (middle.valid, middle.checked, middle.first_invalid_seq) == (False, 1, 2)
    assert middle.reason == "row 2 is missing"


async def test_a_moved_chain_head_is_detected(audit_sessionmaker: Sessions, new_event: Any) -> None:
    await append(audit_sessionmaker, events_of(new_event, 2))
    await change(
        audit_sessionmaker,
        update(AuditChainHead).values(hash="f" * 64).where(AuditChainHead.id == 1),
    )
    result = await verify(audit_sessionmaker)
    assert (result.valid, result.checked, result.first_invalid_seq) == (False, 2, 2)
    assert "head" in (result.reason or "")


async def test_a_row_forged_beyond_the_head_is_detected(
    audit_sessionmaker: Sessions, new_event: Any
) -> None:
    await append(audit_sessionmaker, events_of(new_event, 2))
    last = (await rows(audit_sessionmaker))[-1]
    async with session_scope(audit_sessionmaker) as session:
        session.add(
            AuditEventRow(
                seq=7,
                event_id="forged",
                type="x",
                service="x",
                source="x",
                occurred_at=datetime.now(UTC),
                data="{}",
                prev_hash=last.hash,
                hash="0" * 64,
            )
        )
    result = await verify(audit_sessionmaker)
    assert (result.valid, result.first_invalid_seq) == (False, 7)


async def test_an_unreadable_value_is_reported_not_raised(
    audit_sessionmaker: Sessions, new_event: Any, database_url: str
) -> None:
    await append(audit_sessionmaker, events_of(new_event, 3))
    if database_url.startswith("sqlite"):
        # Only SQLite lets a hand edit store a value the column type cannot load.
        statement = "UPDATE audit_events SET occurred_at = 'garbage' WHERE seq = 2"
        expected = "row 2 cannot be read"
    else:
        statement = "UPDATE audit_events SET data = 'not json' WHERE seq = 2"
        expected = "row 2 cannot be hashed (data is not JSON)"
    async with session_scope(audit_sessionmaker) as session:
        await session.execute(text(statement))
    result = await verify(audit_sessionmaker, batch=2)
    assert (result.valid, result.checked, result.first_invalid_seq, result.reason) == (
        False,
        1,
        2,
        expected,
    )


async def test_concurrent_appenders_in_two_processes_keep_one_gap_free_chain(
    database_url: str, new_event: Any
) -> None:
    # Two engines stand for two admin replicas (or a replica and its outbox relay): they
    # share nothing but the database (row lock on PostgreSQL, write lock on SQLite).
    settings = Settings(database_url=database_url, log_json=False)
    engines = [create_engine(settings), create_engine(settings)]
    try:
        await upgrade_to_head(engines[0], MIGRATIONS_DIR)
        replicas = [create_sessionmaker(engine) for engine in engines]
        batches = [events_of(new_event, 3) for _ in range(40)]
        # Every batch is sent twice (a relay retrying after a lost answer), once per replica.
        work = [(replicas[i % 2], batch) for i, batch in enumerate(batches)]
        work += [(replicas[(i + 1) % 2], batch) for i, batch in enumerate(batches)]

        async def deliver(sessions: Sessions, batch: list[AuditEvent]) -> AppendResult:
            result: AppendResult = await append(sessions, batch, source="pipeline")
            return result

        results = await asyncio.gather(*(deliver(s, b) for s, b in work))
        assert sum(r.accepted for r in results) == 120
        assert sum(r.duplicates for r in results) == 120

        sessions = replicas[0]
        async with sessions() as session:
            seqs = list((await session.scalars(select(AuditEventRow.seq).order_by("seq"))).all())
            ids = await session.scalar(select(func.count(func.distinct(AuditEventRow.event_id))))
        assert seqs == list(range(1, 121))
        assert ids == 120
        result = await verify(sessions, batch=50)
        assert (result.valid, result.checked) == (True, 120)
    finally:
        for engine in engines:
            await engine.dispose()
