"""Database connection-pool metrics: the app's pool read at scrape time, and pool timeouts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, Pool, QueuePool

from flightdeck_common.metrics import counter

POOL_CONNECTIONS = "flightdeck_db_pool_connections"
POOL_SIZE = "flightdeck_db_pool_size"
POOL_STATES = ("checked_out", "idle", "overflow")

POOL_WAIT_TIMEOUTS = counter(
    "flightdeck_db_pool_wait_timeouts_total",
    "Requests for a database connection that gave up after waiting the pool timeout "
    "(pool and overflow all checked out).",
)


# A connection returned to the pool less than this long ago is handed out without the
# pre-ping round trip: it just worked. One that sat idle longer (or across a database
# restart) is pinged first and replaced if dead. A connection that dies while busy fails
# its statement instead; SQLAlchemy then invalidates every connection of the pool opened
# before that moment, so the dead ones are not handed out again.
PING_AFTER_IDLE_SECONDS = 1.0
_RETURNED_AT = "flightdeck_returned_at"


class TimeoutCountingQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool, counting waits that end in a pool timeout, and
    pre-pinging (when ``pre_ping`` is on) only connections idle for
    ``PING_AFTER_IDLE_SECONDS`` or more: under load that saves one database round trip
    per checkout."""

    def _do_get(self) -> ConnectionPoolEntry:
        # QueuePool raises its TimeoutError here, whoever asked (request or background task).
        try:
            record = super()._do_get()
        except sa_exc.TimeoutError:
            POOL_WAIT_TIMEOUTS.inc()
            raise
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is not None and time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
            # The pool skips the pre-ping of a "fresh" connection (one it has just opened).
            record.fresh = True  # type: ignore[attr-defined]
        return record

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()
        super()._do_return_conn(record)


@dataclass(frozen=True)
class PoolUsage:
    """One look at a queue pool. ``checked_out + idle`` connections are open; ``overflow``
    of them are beyond ``size`` (made on demand, closed when returned)."""

    checked_out: int
    idle: int
    overflow: int
    size: int


def pool_usage(pool: Pool) -> PoolUsage | None:
    """The pool's connection counts, or None for pools that keep none
    (``StaticPool`` of in-memory SQLite, ``NullPool``)."""
    if not isinstance(pool, QueuePool):
        return None
    return PoolUsage(
        checked_out=max(0, pool.checkedout()),
        idle=max(0, pool.checkedin()),
        # Negative while fewer than ``size`` connections have been opened.
        overflow=max(0, pool.overflow()),
        size=pool.size(),
    )


class DatabasePoolCollector(Collector):
    """``flightdeck_db_pool_connections{state}`` and ``flightdeck_db_pool_size`` of one
    engine, read from its pool on every scrape.

    ``engine`` returns the app's engine, or None before its lifespan made one; the pool is
    looked up each time because ``engine.dispose()`` replaces it.
    """

    def __init__(self, engine: Callable[[], AsyncEngine | None]) -> None:
        self._engine = engine

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families(None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self._engine()
        yield from self._families(pool_usage(engine.sync_engine.pool) if engine else None)

    @staticmethod
    def _families(usage: PoolUsage | None) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            POOL_CONNECTIONS,
            "Database connections of this process by state: checked_out (in use), idle "
            "(open, in the pool), overflow (open beyond the pool size; also counted above).",
            labels=["state"],
        )
        size = GaugeMetricFamily(
            POOL_SIZE, "Connections the pool keeps open between uses (its pool_size)."
        )
        if usage is not None:
            connections.add_metric(["checked_out"], usage.checked_out)
            connections.add_metric(["idle"], usage.idle)
            connections.add_metric(["overflow"], usage.overflow)
            size.add_metric([], usage.size)
        yield connections
        yield size
