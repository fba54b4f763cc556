"""The change tail: many live streams of one process share one read per commit, and
streams behind the tail (or a burst longer than it) still get every event, in order."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from flightdeck_common.testing.live import SseReader
from flightdeck_pipeline.events.publish import record_change
from flightdeck_pipeline.events.repository import ChangeEventRepository
from flightdeck_pipeline.events.tail import ChangeTail

pytestmark = pytest.mark.timeout(60)

STREAMS = 20


@pytest.fixture
def table_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``after`` position of every read of the change events table, by anyone."""
    reads: list[int] = []
    original = ChangeEventRepository.list_after

    async def counted(self: ChangeEventRepository, after_id: int, limit: int) -> Any:
        reads.append(after_id)
        return await original(self, after_id, limit)

    monkeypatch.setattr(ChangeEventRepository, "list_after", counted)
    return reads


async def _numbers(reader: SseReader, count: int) -> list[tuple[int, int]]:
    """(event id, payload n) of the next ``count`` events."""
    found = []
    for _ in range(count):
        event = await reader.next_event()
        assert event.id is not None
        assert event.data is not None
        found.append((int(event.id), json.loads(event.data)["n"]))
    return found


async def test_streams_following_the_head_share_one_read_per_commit(
    live_app_factory: Any, events_backend: Any, table_reads: list[int]
) -> None:
    live = await live_app_factory(
        events_backend.database_url, events_backend.redis_url, poll_interval=60
    )
    async with contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(live.stream()) for _ in range(STREAMS)]
        for reader in readers:
            await reader.next_message()
        for reader in readers:  # a heartbeat: every stream has read and waits for a commit
            message = await reader.next_message()
            assert message is not None
            assert message.comments == ["ping"]
        table_reads.clear()

        commits = 3
        ids = []
        for n in range(commits):
            ids.append(await live.record("run.updated", {"n": n}))
            for reader in readers:
                assert await _numbers(reader, 1) == [(ids[-1], n)]

    # One read per commit for all the streams (not one per stream and commit).
    assert len(table_reads) == commits


async def test_a_burst_longer_than_the_tail_reaches_every_stream_complete_and_in_order(
    live_app_factory: Any, events_backend: Any
) -> None:
    live = await live_app_factory(events_backend.database_url, events_backend.redis_url)
    live.app.state.change_tail = ChangeTail(live.sessionmaker, live.bus, capacity=3)
    async with live.stream() as head, live.stream() as other:
        for reader in (head, other):
            await reader.next_message()
        first = await live.record("run.updated", {"n": 0})
        assert await _numbers(head, 1) == [(first, 0)]
        burst = 10
        async with live.sessionmaker() as session:  # one transaction: the tail reads it in parts
            for n in range(1, burst + 1):
                await record_change(session, live.bus, "run.updated", {"n": n})
            await session.commit()
        expected = [(first + n, n) for n in range(1, burst + 1)]
        assert await _numbers(head, burst) == expected
        assert await _numbers(other, burst + 1) == [(first, 0), *expected]

    # A client resuming from before the tail replays from the table, then follows the head.
    async with live.stream(last_event_id=first) as late:
        await late.next_message()
        assert await _numbers(late, burst) == expected
        newest = await live.record("run.updated", {"n": burst + 1})
        assert await _numbers(late, 1) == [(newest, burst + 1)]
