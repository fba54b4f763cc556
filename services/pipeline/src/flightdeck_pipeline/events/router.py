"""``GET /pipelines/events``: the live stream of run and deployment changes (SSE)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from pydantic import StringConstraints

from flightdeck_common.auth.dependencies import USER_AUTH_RESPONSES, CurrentUser, still_authorized
from flightdeck_common.dependencies import ResourcesDep
from flightdeck_common.sse import EventSourceResponse, event_stream_responses
from flightdeck_pipeline.events.dependencies import ChangeBusDep, ChangeTailDep
from flightdeck_pipeline.events.publish import KIND_MAX_LENGTH, KIND_PATTERN
from flightdeck_pipeline.events.stream import RETRY_MILLISECONDS, open_change_stream
from flightdeck_pipeline.settings import Settings

# change_events.id is a 32-bit integer: larger positions cannot exist (and would overflow).
MAX_EVENT_ID = 2**31 - 1
MAX_KIND_FILTERS = 16

Kind = Annotated[str, StringConstraints(pattern=KIND_PATTERN, max_length=KIND_MAX_LENGTH)]

EVENT_STREAM_DESCRIPTION = (
    "A `text/event-stream` that stays open. Each change is an event with `id` (pass it "
    "back as `Last-Event-ID` to resume), `event` (its kind, e.g. `run.updated`, "
    "`deployment.updated`) and `data` (JSON). The first message sets `retry` "
    f"({RETRY_MILLISECONDS} ms) and the starting `id`; `: ping` comments arrive while "
    "idle. `event: reset` means the missed events cannot be replayed: reload the "
    "state, the stream continues from the newest event. The stream ends when the "
    "access token expires, and when it is revoked (logout, password change, deactivation; "
    "checked at every heartbeat interval); reconnect with a fresh one."
)
EVENT_STREAM_EXAMPLE = (
    "retry: 3000\nid: 41\n\n"
    'id: 42\nevent: run.updated\ndata: {"id": 7, "status": "running"}\n\n'
    ": ping\n\n"
)

router = APIRouter(prefix="/pipelines", tags=["events"])


@router.get(
    "/events",
    response_class=EventSourceResponse,
    status_code=200,
    summary="Stream run and deployment changes (SSE)",
    responses=event_stream_responses(
        EVENT_STREAM_DESCRIPTION, example=EVENT_STREAM_EXAMPLE, errors=USER_AUTH_RESPONSES
    ),
)
async def stream_events(
    request: Request,
    user: CurrentUser,
    resources: ResourcesDep,
    bus: ChangeBusDep,
    tail: ChangeTailDep,
    kind: Annotated[
        list[Kind] | None,
        Query(
            max_length=MAX_KIND_FILTERS,
            description="Only these kinds (repeatable), e.g. `run.updated`.",
        ),
    ] = None,
    last_event_id: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_EVENT_ID,
            description=(
                "Resume after this event id, for clients that cannot set the "
                "`Last-Event-ID` header (the header wins)."
            ),
        ),
    ] = None,
    last_event_id_header: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=MAX_EVENT_ID,
            description="Resume after this event id (sent by EventSource on reconnect).",
        ),
    ] = None,
) -> EventSourceResponse:
    """Stream run and deployment changes as Server-Sent Events, resumable with Last-Event-ID."""
    settings: Settings = request.app.state.settings
    after = last_event_id_header if last_event_id_header is not None else last_event_id
    events = await open_change_stream(
        resources.sessionmaker,
        bus,
        last_event_id=after,
        replay_limit=settings.sse_replay_limit,
        kinds=kind,
        tail=tail,
    )
    return EventSourceResponse(
        events,
        heartbeat_seconds=settings.sse_heartbeat_seconds,
        expires_at=user.exp,
        still_authorized=still_authorized(request, user),
    )
