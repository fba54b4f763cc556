"""The newest change events of a process, read once per wake-up for all its live streams.

Streams that follow the head (the usual case: connected, caught up, waiting for the next
commit) ask the tail instead of the table. After a wake-up the first stream to ask reads
the events after the newest the tail holds, in one short session; the streams asking
meanwhile wait for that read and take their events from memory. Without it every stream
ran its own query per commit: 200 clients meant 200 pool checkouts per webhook, and the
pool (20 connections) ran dry under a webhook rate a single read serves easily.

The tail keeps the last ``capacity`` events. A stream further behind (replaying after
``Last-Event-ID``) reads the table itself until it reaches the tail.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_pipeline.events.bus import ChangeBus
from flightdeck_pipeline.events.repository import ChangeEventRepository, ChangeRow

DEFAULT_CAPACITY = 500


class ChangeTail:
    """See the module docstring. One per process (``app.state.change_tail``)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: ChangeBus,
        *,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._sessionmaker = sessionmaker
        self._bus = bus
        self._capacity = capacity
        # Every event with an id above ``_base`` is in ``_rows`` (oldest first), as of the
        # read that started at bus generation ``_read_generation``. None: never read.
        self._base: int | None = None
        self._rows: list[ChangeRow] = []
        self._read_generation = -1
        self._lock = asyncio.Lock()
        self.reads = 0  # queries made (tests and diagnostics)

    async def after(self, cursor: int, generation: int) -> list[ChangeRow] | None:
        """The events after ``cursor`` that were committed before the bus reached
        ``generation`` (and maybe some later ones), oldest first; None when the tail does
        not reach back to ``cursor``: the caller reads the table."""
        if self._read_generation < generation or self._base is None:
            async with self._lock:  # one read; the streams asking meanwhile wait for it
                if self._read_generation < generation or self._base is None:
                    await self._catch_up(cursor)
        assert self._base is not None
        if cursor < self._base:
            return None
        return [row for row in self._rows if row.id > cursor]

    async def _catch_up(self, cursor: int) -> None:
        started_at = self._bus.generation  # commits announced after this wake us again
        if self._base is None:
            self._base = cursor
        newest = self._rows[-1].id if self._rows else self._base
        while True:
            async with self._sessionmaker() as session:
                rows = await ChangeEventRepository.from_session(session).list_after(
                    newest, self._capacity
                )
            self.reads += 1
            if rows:
                newest = rows[-1].id
                self._rows.extend(rows)
                if len(self._rows) > self._capacity:
                    dropped = len(self._rows) - self._capacity
                    self._base = self._rows[dropped - 1].id
                    del self._rows[:dropped]
            if len(rows) < self._capacity:
                break
        self._read_generation = started_at
