"""OutboxRelay on SQLite and PostgreSQL: order, backoff, outages, concurrency, metrics."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase

from flightdeck_common.db import create_engine, create_sessionmaker, is_sqlite, utcnow
from flightdeck_common.outbox import AuditEvent, OutboxEventMixin, enqueue
from flightdeck_common.outbox_relay import OutboxDeliveryError, OutboxRelay, http_sender
from flightdeck_common.settings import CommonSettings


class Base(DeclarativeBase):
    pass


class Outbox(OutboxEventMixin, Base):
    __tablename__ = "outbox"


class _OtherBase(DeclarativeBase):
    pass


class MissingOutbox(OutboxEventMixin, _OtherBase):
    """Mapped, but its table is never created: every query fails."""

    __tablename__ = "outbox_missing"


class _Settings(CommonSettings):
    service_name = "test"


Sessionmaker = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[Sessionmaker]:
    engine = create_engine(_Settings(database_url=database_url))
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield create_sessionmaker(engine)
    await engine.dispose()


def _service() -> str:
    """A metrics label of the test's own (the registry is process-wide)."""
    return f"t-{uuid.uuid4().hex[:8]}"


async def _enqueue(sm: Sessionmaker, count: int, *, age: float = 0.0) -> list[str]:
    """Commit ``count`` events with strictly increasing ``occurred_at``; returns their ids."""
    start = utcnow() - timedelta(seconds=age)
    ids = []
    async with sm() as session:
        for i in range(count):
            event = AuditEvent(
                type="test.event",
                service="test",
                occurred_at=start + timedelta(milliseconds=i),
                data={"n": i},
            )
            await enqueue(session, Outbox, event)
            ids.append(event.id)
        await session.commit()
    return ids


async def _rows(sm: Sessionmaker) -> list[Outbox]:
    async with sm() as session:
        result = await session.scalars(select(Outbox).order_by(Outbox.created_at, Outbox.id))
        return list(result)


class Receiver:
    """Stands in for admin: records accepted batches, fails while ``up`` is False."""

    def __init__(self, delay: float = 0.0) -> None:
        self.up = True
        self.delay = delay
        self.calls = 0
        self.accepted: list[str] = []

    async def __call__(self, events: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.up:
            raise ConnectionError("admin is down")
        self.accepted.extend(event["id"] for event in events)


async def _wait_until_drained(relay: OutboxRelay) -> None:
    for _ in range(250):  # 5 s
        if (await relay.refresh_metrics())[0] == 0:
            return
        await asyncio.sleep(0.02)
    pytest.fail("the outbox was not drained")


async def test_delivers_in_order_and_marks_delivered(sessionmaker: Sessionmaker) -> None:
    ids = await _enqueue(sessionmaker, 5)
    receiver = Receiver()
    relay = OutboxRelay(sessionmaker, Outbox, receiver, service=_service(), batch_size=2)

    assert [await relay.relay_once() for _ in range(4)] == [2, 2, 1, 0]

    assert receiver.accepted == ids
    rows = await _rows(sessionmaker)
    assert all(row.delivered_at is not None for row in rows)
    assert [row.attempts for row in rows] == [0] * 5


async def test_payload_is_the_decoded_event(sessionmaker: Sessionmaker) -> None:
    await _enqueue(sessionmaker, 1)
    batches: list[list[dict[str, Any]]] = []

    async def send(events: list[dict[str, Any]]) -> None:
        batches.append(events)

    await OutboxRelay(sessionmaker, Outbox, send, service=_service()).relay_once()
    (event,) = batches[0]
    assert AuditEvent.model_validate(event).data == {"n": 0}


async def test_failure_backs_off_then_delivers_in_order(sessionmaker: Sessionmaker) -> None:
    first = await _enqueue(sessionmaker, 3)
    receiver = Receiver()
    receiver.up = False
    relay = OutboxRelay(
        sessionmaker, Outbox, receiver, service=_service(), min_backoff=0.2, max_backoff=0.4
    )

    before = utcnow()
    assert await relay.relay_once() == 0
    rows = await _rows(sessionmaker)
    assert all(row.delivered_at is None for row in rows)
    assert [row.attempts for row in rows] == [1, 1, 1]
    assert all(row.next_attempt_at is not None and row.next_attempt_at > before for row in rows)
    assert all(row.last_error == "ConnectionError: admin is down" for row in rows)

    # Backing off: no call at all, and a newer event does not overtake the waiting ones.
    receiver.up = True
    later = await _enqueue(sessionmaker, 1)
    assert await relay.relay_once() == 0
    assert receiver.calls == 1

    await asyncio.sleep(0.25)  # > min_backoff (jitter keeps the delay within [0.1, 0.2])
    assert await relay.relay_once() == 4
    assert receiver.accepted == first + later


async def test_backoff_grows_and_is_capped() -> None:
    relay = OutboxRelay(
        None,  # type: ignore[arg-type]  # backoff() needs no database
        Outbox,
        Receiver(),
        service=_service(),
        min_backoff=1.0,
        max_backoff=8.0,
    )
    for attempts, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        delay = relay.backoff(attempts)
        assert full / 2 <= delay <= full


async def test_admin_down_then_back_delivers_every_event_once(
    sessionmaker: Sessionmaker,
) -> None:
    receiver = Receiver()
    receiver.up = False
    relay = OutboxRelay(
        sessionmaker,
        Outbox,
        receiver,
        service=_service(),
        batch_size=7,
        interval=0.02,
        min_backoff=0.02,
        max_backoff=0.1,
    )
    relay.start()
    try:
        ids = await _enqueue(sessionmaker, 10)
        await asyncio.sleep(0.2)
        ids += await _enqueue(sessionmaker, 10)
        await asyncio.sleep(0.2)
        assert receiver.calls >= 2  # it kept trying
        assert receiver.accepted == []
        receiver.up = True
        ids += await _enqueue(sessionmaker, 5)
        await _wait_until_drained(relay)
    finally:
        await relay.stop()

    assert receiver.accepted == ids  # every event, once, in order
    assert all(row.delivered_at is not None for row in await _rows(sessionmaker))


async def test_stop_flushes_pending_events(sessionmaker: Sessionmaker) -> None:
    receiver = Receiver()
    relay = OutboxRelay(sessionmaker, Outbox, receiver, service=_service(), interval=30.0)
    relay.start()
    await asyncio.sleep(0.1)  # the first cycle found nothing; the next is 30 s away
    ids = await _enqueue(sessionmaker, 3)
    await relay.stop()
    assert not relay.running
    assert receiver.accepted == ids


async def test_loop_survives_database_errors(sessionmaker: Sessionmaker) -> None:
    relay = OutboxRelay(sessionmaker, MissingOutbox, Receiver(), service=_service(), interval=0.01)
    relay.start()
    await asyncio.sleep(0.1)
    assert relay.running
    await relay.stop()  # the final flush fails too, and is only logged


async def test_two_relays_never_send_the_same_event(
    sessionmaker: Sessionmaker, database_url: str
) -> None:
    if is_sqlite(database_url):
        pytest.skip("row locks (FOR UPDATE SKIP LOCKED) exist on PostgreSQL only")
    ids = await _enqueue(sessionmaker, 30)
    sends: Counter[str] = Counter()
    rounds: list[tuple[int, int]] = []

    def sender(delay: float) -> Any:
        async def send(events: list[dict[str, Any]]) -> None:
            await asyncio.sleep(delay)  # slow: the other relay runs meanwhile
            sends.update(event["id"] for event in events)

        return send

    service = _service()
    a = OutboxRelay(sessionmaker, Outbox, sender(0.2), service=service, batch_size=10)
    b = OutboxRelay(sessionmaker, Outbox, sender(0.2), service=service, batch_size=10)
    while True:
        got_a, got_b = await asyncio.gather(a.relay_once(), b.relay_once())
        if got_a == got_b == 0:
            break
        rounds.append((got_a, got_b))

    assert set(sends) == set(ids)
    assert max(sends.values()) == 1
    assert rounds[0] == (10, 10)  # they ran side by side on different rows


async def test_pending_gauges_reflect_count_and_age(sessionmaker: Sessionmaker) -> None:
    service = _service()
    relay = OutboxRelay(sessionmaker, Outbox, Receiver(), service=service)

    def sample(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"service": service})

    assert await relay.refresh_metrics() == (0, 0.0)
    await _enqueue(sessionmaker, 2, age=120.0)
    await _enqueue(sessionmaker, 1, age=10.0)

    count, age = await relay.refresh_metrics()
    assert count == 3
    assert 119.0 <= age <= 125.0
    assert sample("flightdeck_outbox_pending") == 3
    assert sample("flightdeck_outbox_oldest_pending_seconds") == age

    assert await relay.relay_once() == 3
    assert await relay.refresh_metrics() == (0, 0.0)
    assert sample("flightdeck_outbox_pending") == 0
    assert sample("flightdeck_outbox_oldest_pending_seconds") == 0
    assert sample("flightdeck_outbox_delivered_total") == 3


class FakeTokens:
    """Hands out a stale token until invalidated, then a good one."""

    def __init__(self) -> None:
        self.current = "stale"
        self.invalidations = 0

    async def token(self) -> str:
        return self.current

    def invalidate(self) -> None:
        self.invalidations += 1
        self.current = "good"


def _admin_app(received: list[dict[str, Any]], status: list[int]) -> FastAPI:
    app = FastAPI()

    @app.post("/admin/internal/audit-events")
    async def audit_events(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer good":
            return Response(status_code=401)
        if status:
            return Response(status_code=status.pop(0))
        body = await request.json()
        received.extend(body["events"])
        return Response(status_code=202)

    return app


async def test_http_sender_renews_a_rejected_token(sessionmaker: Sessionmaker) -> None:
    ids = await _enqueue(sessionmaker, 3)
    received: list[dict[str, Any]] = []
    tokens = FakeTokens()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_admin_app(received, [])), base_url="http://admin"
    ) as http:
        send = http_sender(http, "/admin/internal/audit-events", tokens)
        relay = OutboxRelay(sessionmaker, Outbox, send, service=_service())
        assert await relay.relay_once() == 3

    assert tokens.invalidations == 1
    assert [event["id"] for event in received] == ids


async def test_http_sender_raises_on_error_answers() -> None:
    tokens = FakeTokens()
    tokens.current = "good"
    received: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_admin_app(received, [503])), base_url="http://admin"
    ) as http:
        send = http_sender(http, "/admin/internal/audit-events", tokens)
        with pytest.raises(OutboxDeliveryError, match="HTTP 503"):
            await send([{"id": "x"}])
        tokens.current = "stale"  # 401 again after renewing: give up, no loop
        tokens.invalidate = lambda: None  # type: ignore[method-assign]
        with pytest.raises(OutboxDeliveryError, match="HTTP 401"):
            await send([{"id": "x"}])
    assert received == []


class Refusing(Receiver):
    """Refuses (422) any batch holding one of ``bad`` ids; goes down after ``down_after``
    accepted events when given."""

    def __init__(self, bad: set[str], down_after: int | None = None) -> None:
        super().__init__()
        self.bad = bad
        self.down_after = down_after
        self.batch_sizes: list[int] = []

    async def __call__(self, events: list[dict[str, Any]]) -> None:
        self.batch_sizes.append(len(events))
        if self.down_after is not None and len(self.accepted) >= self.down_after:
            raise ConnectionError("admin went down")
        if any(event["id"] in self.bad for event in events):
            raise OutboxDeliveryError("HTTP 422 invalid event", 422)
        await super().__call__(events)


async def test_a_refused_event_is_set_aside_and_the_rest_flows(
    sessionmaker: Sessionmaker,
) -> None:
    ids = await _enqueue(sessionmaker, 5)
    receiver = Refusing({ids[2]})
    service = _service()
    relay = OutboxRelay(sessionmaker, Outbox, receiver, service=service, batch_size=10)

    assert await relay.relay_once() == 4
    assert receiver.accepted == [ids[0], ids[1], ids[3], ids[4]]  # order kept
    assert receiver.batch_sizes == [5, 1, 1, 1, 1, 1]  # the batch, then one by one
    rows = {row.id: row for row in await _rows(sessionmaker)}
    assert all(row.delivered_at is not None for row in rows.values())
    assert rows[ids[2]].last_error is not None
    assert rows[ids[2]].last_error.startswith("rejected: HTTP 422")
    assert rows[ids[0]].last_error is None
    rejected = REGISTRY.get_sample_value("flightdeck_outbox_rejected_total", {"service": service})
    assert rejected == 1


async def test_an_outage_while_isolating_retries_the_tail(sessionmaker: Sessionmaker) -> None:
    ids = await _enqueue(sessionmaker, 4)
    receiver = Refusing({ids[0]}, down_after=1)
    relay = OutboxRelay(sessionmaker, Outbox, receiver, service=_service(), batch_size=10)

    assert await relay.relay_once() == 1  # ids[0] refused, ids[1] accepted, then down
    rows = {row.id: row for row in await _rows(sessionmaker)}
    assert rows[ids[1]].delivered_at is not None
    assert rows[ids[0]].last_error is not None
    assert rows[ids[0]].last_error.startswith("rejected:")
    for pending in ids[2:]:
        assert rows[pending].delivered_at is None
        assert rows[pending].attempts == 1
        assert rows[pending].next_attempt_at is not None


async def test_http_sender_classifies_refusals() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        status = int(request.url.params["status"])
        return httpx.Response(status, json={"detail": "nope"})

    class Tokens:
        async def token(self) -> str:
            return "t"

        def invalidate(self) -> None:
            return None

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        for status, permanent in ((422, True), (400, True), (503, False), (404, False)):
            send = http_sender(http, f"http://admin/x?status={status}", Tokens())
            with pytest.raises(OutboxDeliveryError) as caught:
                await send([{"id": "x"}])
            assert caught.value.status_code == status
            assert caught.value.permanent is permanent
