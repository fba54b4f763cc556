"""The live stream of change events: replay after ``Last-Event-ID``, then follow new commits.

Wire format (``text/event-stream``)::

    retry: 3000            <- first message: reconnect delay and the starting position, so
    id: 41                    a client that reconnects before any event resumes from here

    id: 42
    event: run.updated
    data: {"id": 7, "status": "running", ...}

    : ping                 <- heartbeat (flightdeck_common.sse) while idle

A client further behind than the replay limit (or whose position the table no longer
holds) first gets ``event: reset`` with ``id`` set to the newest event: it must reload its
state from the REST API, then the stream goes on from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_common.sse import ServerSentEvent, json_event
from flightdeck_pipeline.events.bus import ChangeBus
from flightdeck_pipeline.events.repository import ChangeEventRepository
from flightdeck_pipeline.events.tail import ChangeTail

RETRY_MILLISECONDS = 3000
RESET_EVENT = "reset"
# Rows read per query while replaying or catching up (a short session per query).
FETCH_BATCH_SIZE = 500


class ResetReason(StrEnum):
    # More than the replay limit of events were missed.
    REPLAY_LIMIT_EXCEEDED = "replay_limit_exceeded"
    # The events after the client's position are gone (pruned) or the position is unknown
    # to this database (beyond its newest event: restored or recreated database).
    POSITION_UNAVAILABLE = "position_unavailable"


@dataclass(frozen=True)
class StreamStart:
    """Where a stream starts: events with ids above ``after_id`` are sent."""

    after_id: int
    reset: ResetReason | None = None


async def plan_start(
    repository: ChangeEventRepository, last_event_id: int | None, replay_limit: int
) -> StreamStart:
    """Decide where a (re)connecting client starts.

    Without ``last_event_id``: at the newest event (only new changes). With it: right
    after it, unless more than ``replay_limit`` events follow (counted over every kind,
    whatever the client filters) or the table cannot replay from there — then at the
    newest event, with a reset.
    """
    newest = await repository.latest_id()
    if last_event_id is None:
        return StreamStart(newest)
    if last_event_id > newest:
        return StreamStart(newest, ResetReason.POSITION_UNAVAILABLE)
    if last_event_id > 0:
        oldest = await repository.oldest_id()
        # The client's own event is gone and maybe some after it: they cannot be replayed.
        if oldest is not None and oldest > last_event_id + 1:
            return StreamStart(newest, ResetReason.POSITION_UNAVAILABLE)
    if await repository.more_than_after(last_event_id, replay_limit):
        return StreamStart(newest, ResetReason.REPLAY_LIMIT_EXCEEDED)
    return StreamStart(last_event_id)


async def open_change_stream(
    sessionmaker: async_sessionmaker[AsyncSession],
    bus: ChangeBus,
    *,
    last_event_id: int | None,
    replay_limit: int,
    kinds: Collection[str] | None = None,
    tail: ChangeTail | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """Plan the start now (database errors surface before the response starts) and return
    the stream's events; see the module docstring for what is sent."""
    async with sessionmaker() as session:
        start = await plan_start(
            ChangeEventRepository.from_session(session), last_event_id, replay_limit
        )
    return change_events(sessionmaker, bus, start, kinds=kinds, tail=tail)


async def change_events(
    sessionmaker: async_sessionmaker[AsyncSession],
    bus: ChangeBus,
    start: StreamStart,
    *,
    kinds: Collection[str] | None = None,
    tail: ChangeTail | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """The events after ``start``, then each change as it commits, forever.

    No database connection is held while waiting. With ``tail`` (the process's), a stream
    that follows the head takes new events from it (one read per wake-up for all streams);
    otherwise, or while it replays from further back, each read opens a short session.
    """
    wanted = frozenset(kinds) if kinds else None
    cursor = start.after_id
    yield ServerSentEvent(retry=RETRY_MILLISECONDS, id=cursor)
    if start.reset is not None:
        yield json_event(
            {"reason": start.reset, "last_event_id": cursor}, event=RESET_EVENT, id=cursor
        )
    while True:
        # Read the generation before the query: a commit announced after it ends the wait.
        generation = bus.generation
        rows = await tail.after(cursor, generation) if tail is not None else None
        more = False
        if rows is None:
            async with sessionmaker() as session:
                rows = await ChangeEventRepository.from_session(session).list_after(
                    cursor, FETCH_BATCH_SIZE
                )
            more = len(rows) == FETCH_BATCH_SIZE
        for row in rows:
            cursor = row.id
            if wanted is None or row.kind in wanted:
                yield ServerSentEvent(data=row.payload, event=row.kind, id=row.id)
        if not more:
            await bus.wait(generation)
