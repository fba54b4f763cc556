"""Wake-ups for the live event streams of one process.

The ``change_events`` table is the source of truth; a bus only says "look again". Streams
take ``bus.generation``, read the table, then ``await bus.wait(generation)``: a change
announced between the read and the wait is never missed.

Wake-ups come from three places:

- ``notify()`` — called (through ``record_change``) when a transaction of this process that
  recorded a change commits;
- Redis pub/sub (:class:`RedisChangeBus`) — the change ids committed on other replicas;
- a backstop poller (both buses, when given ``latest_id``) reading ``max(id)`` every
  ``poll_interval`` seconds — one cheap query per process, not per client — so nothing is
  missed while Redis is down, a publish was lost, or another process (the CLI, a second
  uvicorn worker on the same SQLite file) wrote without a bus.

Announcements of ids the process has already seen are ignored, so a replica does not wake
its streams twice for its own commits.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Self

from redis.asyncio import Redis

logger = logging.getLogger(__name__)

CHANGES_CHANNEL = "flightdeck:pipeline:changes"
DEFAULT_POLL_INTERVAL_SECONDS = 1.0
# Reconnect delays of the Redis subscriber (exponential with jitter).
RECONNECT_MIN_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 3.0
# How long the subscriber blocks reading before it looks at the stop flag again.
READ_TIMEOUT_SECONDS = 1.0

LatestChangeId = Callable[[], Awaitable[int]]


class ChangeBus(ABC):
    """Where live streams wait for new change events (one per process, on ``app.state``)."""

    def __init__(
        self,
        *,
        latest_id: LatestChangeId | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self._latest_id = latest_id
        self._poll_interval = poll_interval
        self._generation = 0
        self._changed = asyncio.Event()
        self._latest_seen = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        # Checked by the background loops as well as cancelling them: redis-py can swallow a
        # cancellation that lands while it connects (seen with Python 3.11).
        self._stopping = False

    @property
    def generation(self) -> int:
        """Bumped on every wake-up; pass the value read before a query to :meth:`wait`."""
        return self._generation

    @property
    def latest_seen_id(self) -> int:
        """The highest change id this process has heard of (0 when none)."""
        return self._latest_seen

    @abstractmethod
    def notify(self, change_id: int | None = None) -> None:
        """Announce that a transaction recording ``change_id`` (or unknown ids) committed.

        Never blocks and never raises for a broken transport: called from the event loop
        right after a commit.
        """

    async def wait(self, generation: int) -> None:
        """Return once the generation differs from ``generation`` (at once if it already does).

        Bound it with ``asyncio.timeout`` where needed.
        """
        if self._generation != generation:
            return
        await self._changed.wait()

    async def start(self) -> None:
        """Start the background tasks (backstop poller, and the subscriber for Redis)."""
        if self._started:
            return
        self._started = True
        self._stopping = False
        if self._latest_id is not None:
            self._spawn(self._poll_forever(self._latest_id), "change-bus-poller")

    async def stop(self) -> None:
        """Stop the background tasks."""
        self._started = False
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
            for task in pending:
                logger.warning("change bus: %s did not stop in time", task.get_name())
        self._tasks.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _wake(self, change_id: int | None = None, *, only_if_new: bool = False) -> None:
        """Wake every waiter; with ``only_if_new``, only for an id above the latest seen."""
        if change_id is not None:
            if only_if_new and change_id <= self._latest_seen:
                return
            self._latest_seen = max(self._latest_seen, change_id)
        self._generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll_forever(self, latest_id: LatestChangeId) -> None:
        failing = False
        while not self._stopping:
            try:
                newest = await latest_id()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    logger.warning("change poller: cannot read the latest change id: %r", exc)
                failing = True
            else:
                if failing:
                    logger.info("change poller: database reachable again")
                    failing = False
                self._wake(newest, only_if_new=True)
            await asyncio.sleep(self._poll_interval)


class LocalChangeBus(ChangeBus):
    """In-process bus for the embedded mode (a single replica)."""

    def notify(self, change_id: int | None = None) -> None:
        self._wake(change_id)


class RedisChangeBus(ChangeBus):
    """Bus shared by replicas: commits are published on ``channel``, every replica listens.

    Pub/sub is at-most-once: a replica that is disconnected misses announcements. The
    subscriber reconnects with backoff (one warning per outage, one info line on recovery)
    and wakes its streams after reconnecting; the backstop poller covers the gap meanwhile.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        channel: str = CHANGES_CHANNEL,
        latest_id: LatestChangeId | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
    ) -> None:
        super().__init__(latest_id=latest_id, poll_interval=poll_interval)
        self._redis = redis
        self._channel = channel
        self._to_publish = 0
        self._unknown_ids = False
        self._publish_wanted = asyncio.Event()
        self.subscribed = asyncio.Event()

    def notify(self, change_id: int | None = None) -> None:
        self._wake(change_id)
        # Coalesced: one publish in flight at a time, announcing the highest id committed
        # (or "" when some committed ids are unknown: every replica then wakes).
        if change_id is None:
            self._unknown_ids = True
        else:
            self._to_publish = max(self._to_publish, change_id)
        self._publish_wanted.set()

    async def start(self) -> None:
        if self._started:
            return
        await super().start()
        self._spawn(self._subscribe_forever(), "change-bus-subscriber")
        self._spawn(self._publish_forever(), "change-bus-publisher")

    async def stop(self) -> None:
        await super().stop()
        self.subscribed.clear()

    async def _publish_forever(self) -> None:
        failing = False
        while not self._stopping:
            await self._publish_wanted.wait()
            self._publish_wanted.clear()
            announcement = "" if self._unknown_ids else str(self._to_publish)
            self._to_publish, self._unknown_ids = 0, False
            try:
                await self._redis.publish(self._channel, announcement)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    logger.warning(
                        "change bus: cannot publish on Redis (other replicas catch up by "
                        "polling): %r",
                        exc,
                    )
                failing = True
            else:
                if failing:
                    logger.info("change bus: publishing on Redis again")
                    failing = False

    async def _subscribe_forever(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        failing = False
        while not self._stopping:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self.subscribed.set()
                    if failing:
                        logger.info("change bus: subscribed to Redis again")
                        failing = False
                        self._wake()  # announcements may have been missed meanwhile
                    delay = RECONNECT_MIN_SECONDS
                    while not self._stopping:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=READ_TIMEOUT_SECONDS
                        )
                        if message is not None and message.get("type") == "message":
                            self._on_message(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                if not failing:
                    logger.warning(
                        "change bus: Redis subscription lost, reconnecting (streams fall back "
                        "to polling): %r",
                        exc,
                    )
                    failing = True
                else:
                    logger.debug("change bus: Redis reconnect failed: %r", exc)
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _on_message(self, data: object) -> None:
        try:
            change_id = int(data) if isinstance(data, bytes | str) and data else None
        except ValueError:
            change_id = None
        if change_id is None:
            self._wake()
        else:
            self._wake(change_id, only_if_new=True)
