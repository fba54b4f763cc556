"""The mapping worker: drains pending deliveries behind the acknowledgement.

One per pipeline process. A batch is claimed in arrival order (``FOR UPDATE SKIP LOCKED``
on PostgreSQL, so replicas share the queue), read, applied in lock order and finished in
one transaction; the commit hooks write its rollups and change events, then the cached
metrics of what it wrote are dropped. So a delivery is mapped exactly once: its mapping and
its result commit together, and a crash (even ``kill -9``) mid-batch rolls both back.

Failures, by whose fault they are:

- the payload's (it cannot be read, or the database refuses a value it carries): the
  delivery is finished ``failed`` with its error; it never blocks the others;
- the database's (gone, a deadlock, a lock timeout): the batch is rolled back and tried
  again with backoff;
- a bug (anything else while applying): logged with its traceback, the delivery stays
  pending with the error and is tried again later, with backoff; the backlog alerts see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_common.db import session_scope, utcnow
from flightdeck_common.errors import is_connection_failure
from flightdeck_pipeline.runtime import PipelineRuntime
from flightdeck_pipeline.webhooks.mapping import (
    PAYLOAD_ERRORS,
    ReadDelivery,
    apply_delivery,
    read_delivery,
)
from flightdeck_pipeline.webhooks.metrics import (
    BACKLOG,
    MAPPED,
    MAPPING_LAG,
    MAPPING_RETRIES,
    OLDEST_PENDING_AGE,
)
from flightdeck_pipeline.webhooks.models import FAILED
from flightdeck_pipeline.webhooks.repository import ClaimedDelivery, DeliveryRepository

logger = logging.getLogger(__name__)

# Values the database refuses (too long, out of range, a constraint): the payload's fault.
REFUSED_VALUES = (sa_exc.DataError, sa_exc.IntegrityError)
# PostgreSQL's deadlock_detected, serialization_failure, lock_not_available.
_RETRY_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
MAX_BACKOFF_SECONDS = 30.0
MAX_POSTPONE_SECONDS = 900.0
# How long a batch waits at most for this process's acceptance to finish storing a burst.
YIELD_TO_ACCEPTANCE_SECONDS = 0.25
# How long stop() waits for the cancelled loop before it cancels it again.
STOP_RECANCEL_SECONDS = 0.5


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the database's fault (worth the same batch again later)."""
    if is_connection_failure(exc) or isinstance(exc, sa_exc.TimeoutError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        codes = {getattr(orig, "sqlstate", None), getattr(orig, "pgcode", None)}
        cause = getattr(orig, "__cause__", None)
        codes.add(getattr(cause, "sqlstate", None))
        return bool(codes & _RETRY_SQLSTATES)
    return isinstance(exc, OSError)


class _RetryOneByOne(Exception):
    """A batch must be mapped delivery by delivery to isolate what failed in it."""


class DeliveryWorker:
    """Maps pending deliveries in batches until stopped; :meth:`wake` after a commit that
    stored some makes it look at once (it also polls, for deliveries other replicas took).
    With ``mapping`` off it only keeps the backlog figures (this process only accepts)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        runtime: PipelineRuntime,
        *,
        batch_size: int,
        poll_seconds: float,
        backlog_refresh_seconds: float = 2.0,
        mapping: bool = True,
        yield_to: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._runtime = runtime
        self._settings = runtime.settings
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._backlog_refresh_seconds = backlog_refresh_seconds
        self._mapping = mapping
        # Before each batch: let this process's acceptance store a burst first (bounded).
        self._yield_to = yield_to
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._counted_at = 0.0
        # The backlog as last counted, plus what this process accepted since.
        self.backlog = 0
        self._accepted_total = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-worker")

    async def stop(self) -> None:
        """Stop; a batch under way is rolled back (its deliveries stay pending).

        Cancelled again until it has ended: a cancel that lands while the database driver
        cleans up a connection can be absorbed there (seen on PostgreSQL: the task, marked
        cancelling, went on polling and stop() waited forever)."""
        task = self._task
        if task is None:
            return
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_RECANCEL_SECONDS)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def wake(self) -> None:
        self._wake.set()

    def accepted(self, count: int) -> None:
        """``count`` new pending deliveries were committed by this process."""
        self._accepted_total += count
        self.backlog += count
        BACKLOG.set(self.backlog)
        self.wake()

    async def drained(self, within_seconds: float = 10.0) -> None:
        """Return once nothing is pending that a worker may take now and no batch of this
        worker is under way (its cache invalidation included); TimeoutError after
        ``within_seconds``. For tests and tools."""
        deadline = time.monotonic() + within_seconds
        while True:
            if not self._busy:
                async with self._sessionmaker() as session:
                    ready = await DeliveryRepository(session).ready_count()
                if ready == 0 and not self._busy:
                    return
                if ready:
                    self.wake()
            if time.monotonic() > deadline:
                raise TimeoutError(f"deliveries still pending after {within_seconds} s")
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._idle.wait()

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            mapped = 0
            try:
                await self._refresh_backlog()
                self._wake.clear()
                if self._yield_to is not None:
                    await self._yield_to(YIELD_TO_ACCEPTANCE_SECONDS)
                mapped = await self.map_batch() if self._mapping else 0
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, 0.25 * 2**failures) * random.uniform(0.5, 1)  # noqa: S311 (jitter)
                MAPPING_RETRIES.labels("transient" if is_transient(exc) else "internal").inc()
                log = logger.warning if is_transient(exc) else logger.exception
                log("delivery mapping failed (%r); retrying in %.1f s", exc, delay)
                # A delivery stored meanwhile (the database is back) cuts the wait short.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            if mapped:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the event is set, and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()

    async def _refresh_backlog(self) -> None:
        now = time.monotonic()
        if now - self._counted_at < self._backlog_refresh_seconds:
            return
        self._counted_at = now
        accepted_before = self._accepted_total
        async with self._sessionmaker() as session:
            count, oldest = await DeliveryRepository(session).backlog()
        # Acceptances that committed while the count ran may or may not be in it: counted
        # again rather than lost (the bound errs on the safe side until the next count).
        self.backlog = count + (self._accepted_total - accepted_before)
        BACKLOG.set(count)
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        OLDEST_PENDING_AGE.set(max(0.0, age))

    async def map_batch(self) -> int:
        """Claim, map and commit one batch; the number of deliveries it finished."""
        self._busy = True
        try:
            try:
                return await self._map_claimed_batch()
            except _RetryOneByOne as retry:
                return await self._map_one_by_one(retry.args[0])
        finally:
            self._busy = False
            self._idle.set()

    async def _map_claimed_batch(self) -> int:
        outcomes: list[tuple[ClaimedDelivery, str, str | None]] = []
        async with session_scope(self._sessionmaker) as session:
            deliveries = DeliveryRepository(session)
            claimed = await deliveries.claim(self._batch_size)
            if not claimed:
                return 0
            readable: list[tuple[ClaimedDelivery, ReadDelivery]] = []
            for delivery in claimed:
                try:
                    readable.append((delivery, self._read(delivery)))
                except PAYLOAD_ERRORS as exc:
                    outcomes.append((delivery, FAILED, _describe(exc)))
            readable.sort(key=lambda pair: (pair[1].lock_key(), pair[0].pk))
            try:
                for delivery, read in readable:
                    result = await apply_delivery(
                        session, self._runtime, delivery.delivery_id, read
                    )
                    outcomes.append((delivery, result, None))
            except Exception as exc:
                if is_transient(exc):
                    raise
                # A refused value or a bug: which delivery it was is found one by one.
                raise _RetryOneByOne([d.pk for d in claimed]) from exc
            await deliveries.finish_many([(d.pk, result, error) for d, result, error in outcomes])
        await self._finished(outcomes, self._runtime.stale_scopes(session))
        return len(outcomes)

    async def _map_one_by_one(self, pks: Sequence[int]) -> int:
        finished = 0
        for pk in pks:
            scopes: list[str] = []
            outcome: tuple[ClaimedDelivery, str, str | None] | None = None
            failure: Exception | None = None
            claimed: ClaimedDelivery | None = None
            try:
                async with session_scope(self._sessionmaker) as session:
                    deliveries = DeliveryRepository(session)
                    claimed = await deliveries.claim_one(pk)
                    if claimed is None:
                        continue  # mapped meanwhile (another replica) or postponed
                    try:
                        read = self._read(claimed)
                    except PAYLOAD_ERRORS as exc:
                        outcome = (claimed, FAILED, _describe(exc))
                    else:
                        result = await apply_delivery(
                            session, self._runtime, claimed.delivery_id, read
                        )
                        outcome = (claimed, result, None)
                    await deliveries.finish_many([(claimed.pk, outcome[1], outcome[2])])
                    scopes = self._runtime.stale_scopes(session)
            except Exception as exc:
                if is_transient(exc) or claimed is None:
                    raise
                failure = exc
            if failure is not None and claimed is not None:
                outcome = await self._set_aside(claimed, failure)
            if outcome is not None:
                await self._finished([outcome], scopes)
                finished += 1
        return finished

    async def _set_aside(
        self, delivery: ClaimedDelivery, failure: Exception
    ) -> tuple[ClaimedDelivery, str, str | None] | None:
        """After the delivery's own transaction was rolled back: failed when the database
        refused a value of the payload, else (a bug) pending until a later retry."""
        error = _describe(failure)
        async with session_scope(self._sessionmaker) as session:
            deliveries = DeliveryRepository(session)
            if isinstance(failure, REFUSED_VALUES):
                logger.warning(
                    "delivery %s refused by the database: %s", delivery.delivery_id, error
                )
                await deliveries.fail(delivery.pk, error)
                return (delivery, FAILED, error)
            logger.error(
                "mapping delivery %s (%s) raised an unexpected error; it stays pending",
                delivery.delivery_id,
                delivery.event,
                exc_info=failure,
            )
            MAPPING_RETRIES.labels("internal").inc()
            postpone = min(MAX_POSTPONE_SECONDS, 2.0**delivery.attempts)
            await deliveries.postpone(delivery.pk, error, utcnow() + timedelta(seconds=postpone))
        return None

    def _read(self, delivery: ClaimedDelivery) -> ReadDelivery:
        return read_delivery(delivery.event, delivery.body, self._settings)

    async def _finished(
        self, outcomes: Sequence[tuple[ClaimedDelivery, str, str | None]], scopes: list[str]
    ) -> None:
        """After the commit: metrics, the backlog estimate, and the cached metrics of what
        the transaction wrote dropped (``commit_work.py``, stage 3)."""
        now = utcnow()
        for delivery, result, _ in outcomes:
            MAPPED.labels(delivery.event, result).inc()
            MAPPING_LAG.observe(max(0.0, (now - delivery.received_at).total_seconds()))
        self.backlog = max(0, self.backlog - len(outcomes))
        BACKLOG.set(self.backlog)
        if scopes:
            await self._runtime.after_write(*scopes)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]
