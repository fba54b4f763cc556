"""Dependencies of the live events: the process's change bus and tail."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from flightdeck_common.dependencies import inline
from flightdeck_pipeline.events.bus import ChangeBus
from flightdeck_pipeline.events.tail import ChangeTail


def get_change_bus(request: Request) -> ChangeBus:
    """The bus made by ``events_lifespan``; a missing one is a programming error (500)."""
    bus = getattr(request.app.state, "change_bus", None)
    if not isinstance(bus, ChangeBus):
        raise RuntimeError("no change bus: add events_lifespan to the service's lifespan hooks")
    return bus


def get_change_tail(request: Request) -> ChangeTail:
    """The tail made by ``events_lifespan`` (shared reads of the newest events)."""
    tail = getattr(request.app.state, "change_tail", None)
    if not isinstance(tail, ChangeTail):
        raise RuntimeError("no change tail: add events_lifespan to the service's lifespan hooks")
    return tail


ChangeTailDep = Annotated[ChangeTail, Depends(inline(get_change_tail))]
# For writers: ``await record_change(session, bus, RUN_UPDATED, {...})``.
ChangeBusDep = Annotated[ChangeBus, Depends(inline(get_change_bus))]
