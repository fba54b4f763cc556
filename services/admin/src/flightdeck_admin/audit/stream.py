"""The live audit stream: replay after ``Last-Event-ID``, then follow the table by polling.

Wire format (``text/event-stream``)::

    retry: 3000          <- first message: reconnect delay and the starting position
    id: 41

    id: 42
    event: audit
    data: {"seq": 42, "id": "...", "type": "auth.login.succeeded", ...}

Event ids are chain positions (``seq``). Rows become visible in ``seq`` order without gaps
(see ``audit.chain``), so following ``seq > last sent`` misses nothing. Polling the table
with a short session per read is what makes it right with any number of admin replicas:
there is no in-process bus to miss another replica's appends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_admin.audit.repository import AuditRepository
from flightdeck_admin.audit.schemas import AuditEventRead
from flightdeck_common.sse import ServerSentEvent, json_event

AUDIT_EVENT = "audit"
RETRY_MILLISECONDS = 3000
POLL_INTERVAL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
# Rows read per query while replaying or catching up.
FETCH_BATCH_SIZE = 500


async def start_position(session: AsyncSession, last_event_id: int | None) -> int:
    """The ``seq`` a stream starts after: the client's, or the chain's end for a new one.

    A position beyond the chain's end (a database restored from an older backup) starts
    at the end.
    """
    head = await AuditRepository.from_session(session).read_head()
    if last_event_id is None:
        return head.seq
    return min(last_event_id, head.seq)


async def audit_event_feed(
    sessionmaker: async_sessionmaker[AsyncSession],
    after_seq: int,
    *,
    event_type: str | None = None,
    service: str | None = None,
    poll_interval: float = POLL_INTERVAL_SECONDS,
) -> AsyncIterator[ServerSentEvent]:
    """Rows after ``after_seq`` (optionally of one type / service), oldest first, forever.

    No connection is held while waiting: each read opens and closes its own session.
    """
    cursor = after_seq
    yield ServerSentEvent(retry=RETRY_MILLISECONDS, id=cursor)
    while True:
        async with sessionmaker() as session:
            rows = await AuditRepository.from_session(session).events_after(
                cursor, FETCH_BATCH_SIZE, event_type=event_type, service=service
            )
            events = [AuditEventRead.from_row(row) for row in rows]
        for event in events:
            cursor = event.seq
            yield json_event(event, event=AUDIT_EVENT, id=event.seq)
        if len(events) < FETCH_BATCH_SIZE:
            await asyncio.sleep(poll_interval)
