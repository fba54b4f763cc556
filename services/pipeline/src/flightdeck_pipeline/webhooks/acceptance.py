"""Durable acceptance of deliveries with group commit.

Each verified delivery is handed to :meth:`DeliveryAcceptor.accept`, which waits until a
commit holding it succeeded. Deliveries that arrive while a commit is under way wait for
the next one and are written together: one ``INSERT`` of many rows and one commit, on one
connection, however many deliveries are in flight. So a burst of a thousand concurrent
deliveries needs neither a thousand pool connections nor a thousand commits, and the
answer 202 still means stored: a delivery is answered only after its own commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_common.db import session_scope
from flightdeck_pipeline.webhooks.metrics import ACCEPT_BATCH_SIZE
from flightdeck_pipeline.webhooks.models import FAILED, PENDING
from flightdeck_pipeline.webhooks.repository import DeliveryRepository, NewDelivery

logger = logging.getLogger(__name__)

ACCEPTED = "accepted"
IGNORED = "ignored"
DUPLICATE = "duplicate"


@dataclass
class _Waiting:
    delivery: NewDelivery
    answer: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DeliveryAcceptor:
    """Stores deliveries in shared commits (at most ``max_batch`` deliveries or about
    ``max_batch_bytes`` of bodies each); ``on_stored(n)`` is told how many new pending
    deliveries each commit stored (the mapping worker is woken by it)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        max_batch: int = 500,
        max_batch_bytes: int = 16 * 1024 * 1024,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self.on_stored = on_stored
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def accept(self, delivery: NewDelivery) -> str:
        """Store ``delivery``; ``accepted`` (stored pending, or a failed one queued again),
        ``ignored`` (stored, not an event Flightdeck maps) or ``duplicate`` (already
        stored). Raises what the commit raised (the database is down: nothing stored)."""
        waiting = _Waiting(delivery)
        self._queue.append(waiting)
        if self._writer is None or self._writer.done():
            self._idle.clear()
            self._writer = asyncio.create_task(self._write_all(), name="delivery-acceptor")
        # shield: a client that goes away does not cancel a commit other deliveries share.
        return await asyncio.shield(waiting.answer)

    async def idle(self, at_most: float) -> None:
        """Return when no delivery is waiting for a commit, or after ``at_most`` seconds:
        the mapping worker of this process lets a burst be stored first (acceptance is
        what GitHub waits for; mapping can wait)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._idle.wait()

    async def close(self) -> None:
        """Wait for the commit under way (deliveries already handed over are answered)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_all(self) -> None:
        try:
            await self._write_queued()
        finally:
            self._idle.set()

    async def _write_queued(self) -> None:
        while self._queue:
            batch = self._take()
            try:
                answers, stored = await self._write(batch)
            except BaseException as exc:
                for waiting in batch:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for waiting, answer in zip(batch, answers, strict=True):
                if not waiting.answer.done():
                    waiting.answer.set_result(answer)
            if stored and self.on_stored is not None:
                self.on_stored(stored)

    def _take(self) -> list[_Waiting]:
        size = 0
        count = 0
        for waiting in self._queue:
            if count and (count >= self._max_batch or size >= self._max_batch_bytes):
                break
            size += len(waiting.delivery.body)
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    async def _write(self, batch: list[_Waiting]) -> tuple[list[str], int]:
        """One transaction for ``batch``: the answer of each, and the new pending count."""
        ACCEPT_BATCH_SIZE.observe(len(batch))
        first: dict[str, NewDelivery] = {}
        for waiting in batch:
            first.setdefault(waiting.delivery.delivery_id, waiting.delivery)
        async with session_scope(self._sessionmaker) as session:
            deliveries = DeliveryRepository(session)
            new = await deliveries.store_many(list(first.values()))
            requeued: set[str] = set()
            conflicting = [d for d in first.values() if d.delivery_id not in new]
            if conflicting:
                stored = await deliveries.results_of([d.delivery_id for d in conflicting])
                for delivery in conflicting:
                    # A redelivery of one kept as failed is mapped again (GitHub's
                    # "Redeliver" button); any other redelivery changes nothing.
                    if (
                        stored.get(delivery.delivery_id) == FAILED
                        and delivery.result == PENDING
                        and await deliveries.requeue_failed(delivery)
                    ):
                        requeued.add(delivery.delivery_id)
        answers: list[str] = []
        pending = 0
        for waiting in batch:
            delivery = waiting.delivery
            # Copies of a delivery in one commit: the first is the one stored.
            is_first = first[delivery.delivery_id] is delivery
            if is_first and (delivery.delivery_id in new or delivery.delivery_id in requeued):
                pending += delivery.result == PENDING
                answers.append(ACCEPTED if delivery.result == PENDING else IGNORED)
            else:
                answers.append(DUPLICATE)
        return answers, pending
