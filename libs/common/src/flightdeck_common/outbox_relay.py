"""Background delivery of a service's outbox rows to the admin service's audit log.

:class:`OutboxRelay` reads pending rows of a table mapped with
:class:`~flightdeck_common.outbox.OutboxEventMixin`, hands their payloads in batches to a
``send`` callable (usually :func:`http_sender`), and marks them delivered. Delivery is
*at-least-once*: a batch whose ``send`` succeeded but whose commit failed (or that timed
out after the receiver stored it) is sent again, so the receiver must be idempotent by
event id — the admin service is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_common.auth.service_tokens import TokenProvider
from flightdeck_common.db import utcnow
from flightdeck_common.metrics import counter, gauge
from flightdeck_common.outbox import OutboxEventMixin

logger = logging.getLogger(__name__)

Sender = Callable[[list[dict[str, Any]]], Awaitable[None]]
"""Delivers one batch of event payloads; raises when the batch was not accepted."""

LAST_ERROR_MAX = 500  # length of the ``last_error`` column

OUTBOX_PENDING = gauge(
    "flightdeck_outbox_pending",
    "Outbox events not yet delivered to the audit log.",
    ("service",),
)
OUTBOX_OLDEST_PENDING_SECONDS = gauge(
    "flightdeck_outbox_oldest_pending_seconds",
    "Age in seconds of the oldest undelivered outbox event (0 when none is pending).",
    ("service",),
)
OUTBOX_DELIVERED = counter(
    "flightdeck_outbox_delivered_total",
    "Outbox events delivered to the audit log.",
    ("service",),
)

_jitter = secrets.SystemRandom()


OUTBOX_REJECTED = counter(
    "flightdeck_outbox_rejected_total",
    "Outbox events the audit log refused for good (kept in the outbox with the reason).",
    ("service",),
)

# Answers that will not change on retry: the events themselves are refused.
PERMANENT_REJECTIONS = frozenset({400, 413, 422})


class OutboxDeliveryError(RuntimeError):
    """The receiver did not accept a batch (non-2xx answer)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code

    @property
    def permanent(self) -> bool:
        """Whether the receiver refused the content (retrying the same batch cannot help)."""
        return self.status_code in PERMANENT_REJECTIONS


class OutboxRelay:
    """Delivers pending outbox rows in order, in batches, with retries and backoff.

    ``relay_once()`` takes up to ``batch_size`` undelivered rows ordered by
    ``(created_at, id)`` and calls ``send`` with their decoded payloads; on success the
    rows are marked delivered in the same transaction. On failure every row of the batch
    gets ``attempts + 1``, ``last_error`` and ``next_attempt_at = now + backoff`` (exponential
    from ``min_backoff``, capped at ``max_backoff``, with jitter).

    Order: a batch is the *due prefix* of the pending rows — when the oldest pending row
    is still backing off nothing is sent, so newer events never overtake older ones (a
    permanently rejected event therefore holds up the rest; the pending gauges show it).

    Concurrency: on PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED`` for the whole
    transaction, so two replicas never send the same rows at the same time (each takes a
    different batch; across replicas batches may then arrive interleaved). On SQLite the
    select is plain: run one relay per database there. The transaction stays open while
    ``send`` runs, so ``send`` must time out well before the server's idle-in-transaction
    timeout (60 s).

    Delivery is at-least-once; the receiver deduplicates by event id.

    ``start()`` runs ``run()`` in a background task (call it in the lifespan); ``await
    stop()`` ends it and by default tries one last bounded delivery. The loop never raises:
    failures are logged once per outage (warning) and the recovery once (info). Each cycle
    refreshes ``flightdeck_outbox_pending{service}`` and
    ``flightdeck_outbox_oldest_pending_seconds{service}`` with one aggregate query;
    ``flightdeck_outbox_delivered_total{service}`` counts delivered events.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        model: type[OutboxEventMixin],
        send: Sender,
        *,
        service: str,
        batch_size: int = 100,
        interval: float = 1.0,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        stop_timeout: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 < min_backoff <= max_backoff:
            raise ValueError("need 0 < min_backoff <= max_backoff")
        self.service = service
        self.batch_size = batch_size
        self.interval = interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stop_timeout = stop_timeout
        self._sessionmaker = sessionmaker
        self._model = model
        self._send = send
        self._clock = clock
        self._failing = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the background task is running."""
        return self._task is not None and not self._task.done()

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (jittered, capped)."""
        base = min(self.max_backoff, self.min_backoff * 2 ** max(attempts - 1, 0))
        return float(base * _jitter.uniform(0.5, 1.0))

    async def relay_once(self) -> int:
        """Send one batch of due pending events; returns how many were delivered.

        Returns 0 when nothing is due or when ``send`` failed (the batch is then scheduled
        for a retry). When the receiver refuses the batch's content (400/413/422), the
        events are sent one by one: the refused ones are set aside (``delivered_at`` set,
        ``last_error`` = ``rejected: ...``, counted in ``flightdeck_outbox_rejected_total``,
        logged as an error) so one bad event cannot hold up the log forever. Database
        errors propagate.
        """
        model = self._model
        now = self._clock()
        async with self._sessionmaker() as session, session.begin():
            query = (
                select(model.id, model.payload, model.attempts, model.next_attempt_at)
                .where(model.delivered_at.is_(None))
                .order_by(model.created_at, model.id)
                .limit(self.batch_size)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            batch = []
            for row in rows:
                if row.next_attempt_at is not None and row.next_attempt_at > now:
                    break  # keep the order: nothing overtakes a row that is backing off
                batch.append(row)
            if not rows:
                self._note_recovery()  # e.g. the database is back and nothing is pending
            if not batch:
                return 0
            delivered, rejected, failure = await self._deliver(batch)
            if delivered:
                await session.execute(
                    update(model).where(model.id.in_(delivered)).values(delivered_at=self._clock())
                )
            for row_id, reason in rejected:
                # Kept, with the reason, but no longer holding up the events behind it.
                await session.execute(
                    update(model)
                    .where(model.id == row_id)
                    .values(
                        delivered_at=self._clock(),
                        attempts=model.attempts + 1,
                        last_error=f"rejected: {reason}"[:LAST_ERROR_MAX],
                    )
                )
            if failure is not None:
                failed_rows, exc = failure
                ids = [row.id for row in failed_rows]
                attempts = max(row.attempts for row in failed_rows) + 1
                delay = self.backoff(attempts)
                error = f"{type(exc).__name__}: {exc}"[:LAST_ERROR_MAX]
                await session.execute(
                    update(model)
                    .where(model.id.in_(ids))
                    .values(
                        attempts=model.attempts + 1,
                        next_attempt_at=now + timedelta(seconds=delay),
                        last_error=error,
                    )
                )
                self._note_failure(
                    f"cannot deliver {len(ids)} events (attempt {attempts}), "
                    f"retrying in {delay:.1f}s: {error}"
                )
        if rejected:
            OUTBOX_REJECTED.labels(service=self.service).inc(len(rejected))
            logger.error(
                "outbox relay for %s: the audit log refused %d events for good (kept in the "
                "outbox with the reason): %s",
                self.service,
                len(rejected),
                "; ".join(f"{row_id}: {reason}" for row_id, reason in rejected)[:1000],
            )
        if delivered:
            OUTBOX_DELIVERED.labels(service=self.service).inc(len(delivered))
        if failure is None:
            self._note_recovery()
        return len(delivered)

    async def _deliver(
        self, batch: list[Any]
    ) -> tuple[list[str], list[tuple[str, str]], tuple[list[Any], Exception] | None]:
        """Send ``batch``; when the receiver refuses its content, send the events one by one
        (in order) to find the refused ones. Returns the delivered ids, the refused
        ``(id, reason)`` pairs, and the rows that failed for a transient reason (with the
        error) — the unsent tail from the first transient failure on."""
        try:
            await self._send([json.loads(row.payload) for row in batch])
        except OutboxDeliveryError as exc:
            if not exc.permanent:
                return [], [], (batch, exc)
            if len(batch) == 1:
                return [], [(batch[0].id, str(exc))], None
        except Exception as exc:
            return [], [], (batch, exc)
        else:
            return [row.id for row in batch], [], None
        delivered: list[str] = []
        rejected: list[tuple[str, str]] = []
        for index, row in enumerate(batch):
            try:
                await self._send([json.loads(row.payload)])
            except OutboxDeliveryError as exc:
                if not exc.permanent:
                    return delivered, rejected, (batch[index:], exc)
                rejected.append((row.id, str(exc)))
            except Exception as exc:
                return delivered, rejected, (batch[index:], exc)
            else:
                delivered.append(row.id)
        return delivered, rejected, None

    async def refresh_metrics(self) -> tuple[int, float]:
        """Update the pending gauges; returns ``(pending count, oldest age in seconds)``."""
        model = self._model
        async with self._sessionmaker() as session:
            result = await session.execute(
                select(func.count(), func.min(model.created_at)).where(model.delivered_at.is_(None))
            )
            count, oldest = result.one()
        age = max((self._clock() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        OUTBOX_PENDING.labels(service=self.service).set(count)
        OUTBOX_OLDEST_PENDING_SECONDS.labels(service=self.service).set(age)
        return int(count), age

    async def run(self) -> None:
        """Relay until ``stop()``: a full batch is followed at once by the next one,
        otherwise the loop waits ``interval`` seconds. Never raises (except cancellation)."""
        while not self._stopping.is_set():
            delivered = 0
            try:
                delivered = await self.relay_once()
            except Exception as exc:
                self._note_failure(f"relay cycle failed: {type(exc).__name__}: {exc}")
            try:
                await self.refresh_metrics()
            except Exception as exc:
                logger.debug("outbox relay for %s: metrics refresh failed: %r", self.service, exc)
            if delivered < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.interval)

    def start(self) -> None:
        """Run ``run()`` in a background task of the running event loop (idempotent)."""
        if not self.running:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"flightdeck-outbox-relay-{self.service}"
            )

    async def stop(self, flush: bool = True) -> None:
        """End the background task (letting a running cycle finish within ``stop_timeout``),
        then, with ``flush``, try one last ``relay_once()`` bounded by ``stop_timeout``.
        Undelivered events stay in the table for the next start; never raises."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.stop_timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                logger.exception("outbox relay for %s ended with an error", self.service)
        if not flush:
            return
        try:
            delivered = await asyncio.wait_for(self.relay_once(), self.stop_timeout)
        except Exception as exc:  # TimeoutError included
            logger.warning(
                "outbox relay for %s: final delivery on shutdown failed: %r", self.service, exc
            )
        else:
            if delivered:
                logger.info(
                    "outbox relay for %s delivered %d events on shutdown", self.service, delivered
                )

    def _note_failure(self, message: str) -> None:
        if not self._failing:
            self._failing = True
            logger.warning("outbox relay for %s: %s", self.service, message)
        else:
            logger.debug("outbox relay for %s: %s", self.service, message)

    def _note_recovery(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("outbox relay for %s delivers again", self.service)


def http_sender(
    http: httpx.AsyncClient,
    url: str,
    token_provider: TokenProvider,
    *,
    timeout: float = 10.0,
) -> Sender:
    """A ``send`` that POSTs ``{"events": [...]}`` to ``url`` with this service's token.

    A 401 invalidates the cached token and the request is retried once with a new one.
    Raises ``OutboxDeliveryError`` on any other non-2xx answer; transport errors and token
    errors (``AuthUnavailable``, ``ServiceCredentialsRejected``) propagate — the relay
    retries them all later.
    """

    async def post(events: list[dict[str, Any]]) -> httpx.Response:
        token = await token_provider.token()
        return await http.post(
            url,
            json={"events": events},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
        )

    async def send(events: list[dict[str, Any]]) -> None:
        response = await post(events)
        if response.status_code == 401:
            token_provider.invalidate()
            response = await post(events)
        if not response.is_success:
            detail = response.text[:200] if response.status_code in PERMANENT_REJECTIONS else ""
            raise OutboxDeliveryError(
                f"{url} answered HTTP {response.status_code} {detail}".rstrip(),
                response.status_code,
            )

    return send
