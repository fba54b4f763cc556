"""Lifespan hook making the process's change bus (``app.state.change_bus``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from flightdeck_common.resources import Resources
from flightdeck_common.service_app import LifespanHook
from flightdeck_pipeline.events.bus import (
    CHANGES_CHANNEL,
    DEFAULT_POLL_INTERVAL_SECONDS,
    ChangeBus,
    LocalChangeBus,
    RedisChangeBus,
)
from flightdeck_pipeline.events.repository import ChangeEventRepository
from flightdeck_pipeline.events.tail import ChangeTail

logger = logging.getLogger(__name__)


def make_events_lifespan(
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
    channel: str = CHANGES_CHANNEL,
) -> LifespanHook:
    """A lifespan hook building the change bus: Redis pub/sub when the service has Redis,
    in-process otherwise; both with a backstop poller every ``poll_interval`` seconds."""

    @contextlib.asynccontextmanager
    async def events_lifespan(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
        async def latest_id() -> int:
            async with resources.sessionmaker() as session:
                return await ChangeEventRepository.from_session(session).latest_id()

        bus: ChangeBus
        if resources.redis is not None:
            bus = RedisChangeBus(
                resources.redis, channel=channel, latest_id=latest_id, poll_interval=poll_interval
            )
        else:
            bus = LocalChangeBus(latest_id=latest_id, poll_interval=poll_interval)
        logger.debug("change bus: %s", type(bus).__name__)
        async with bus:
            app.state.change_bus = bus
            app.state.change_tail = ChangeTail(resources.sessionmaker, bus)
            try:
                yield
            finally:
                del app.state.change_bus, app.state.change_tail

    return events_lifespan


events_lifespan = make_events_lifespan()
