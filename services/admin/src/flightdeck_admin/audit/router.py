"""Routes of the audit log: ingest (service tokens), list, verify, live stream (admins).

Reading the audit log records nothing: there is no audit of the audit.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query

from flightdeck_admin.audit import policy
from flightdeck_admin.audit.chain import append_events, verify_chain
from flightdeck_admin.audit.repository import AuditRepository
from flightdeck_admin.audit.schemas import (
    AUDIT_BATCH_EXAMPLES,
    NO_NUL_PATTERN,
    AuditAppendOutcome,
    AuditEventBatch,
    AuditEventRead,
    ChainVerification,
    PageCursor,
    PageLimit,
)
from flightdeck_admin.audit.stream import (
    HEARTBEAT_SECONDS,
    RETRY_MILLISECONDS,
    audit_event_feed,
    start_position,
)
from flightdeck_common.auth.claims import ADMIN_INTERNAL_AUDIENCE, TokenClaims
from flightdeck_common.auth.dependencies import (
    SERVICE_AUTH_RESPONSES,
    USER_AUTH_RESPONSES,
    AdminUser,
    require_service,
)
from flightdeck_common.dependencies import ResourcesDep, SessionDep
from flightdeck_common.errors import InvalidCursor, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_DB_INT, Page
from flightdeck_common.params import UtcDatetime
from flightdeck_common.sse import EventSourceResponse, event_stream_responses

AuditSubmitter = Annotated[TokenClaims, Depends(require_service(ADMIN_INTERNAL_AUDIENCE))]

TypeFilter = Annotated[
    str | None,
    Query(alias="type", max_length=100, pattern=NO_NUL_PATTERN, description="Event type."),
]
ServiceFilter = Annotated[
    str | None,
    Query(max_length=40, pattern=NO_NUL_PATTERN, description="Service that emitted it."),
]
ActorFilter = Annotated[
    str | None, Query(max_length=200, pattern=NO_NUL_PATTERN, description="Who acted.")
]
SinceFilter = Annotated[
    UtcDatetime | None, Query(description="Only events that occurred at or after this time.")
]

STREAM_DESCRIPTION = (
    "A `text/event-stream` that stays open. Each row of the chain is an event with `id` "
    "(its `seq`; pass it back as `Last-Event-ID` to resume), `event: audit` and `data` "
    "(the row as JSON, like the items of `GET /admin/audit-events`). The first message sets "
    f"`retry` ({RETRY_MILLISECONDS} ms) and the starting `id`; `: ping` comments arrive "
    "while idle. The stream ends when the access token expires; reconnect with a fresh one."
)
STREAM_EXAMPLE = (
    "retry: 3000\nid: 41\n\n"
    'id: 42\nevent: audit\ndata: {"seq": 42, "type": "auth.login.succeeded", ...}\n\n'
    ": ping\n\n"
)

router = APIRouter(prefix="/admin")
internal_router = APIRouter(prefix="/admin/internal", tags=["internal"])
audit_routes = APIRouter(tags=["audit"])


@internal_router.post(
    "/audit-events",
    response_model=AuditAppendOutcome,
    status_code=200,
    summary="Append audit events",
    responses=SERVICE_AUTH_RESPONSES,
)
async def append_audit_events(
    caller: AuditSubmitter,
    body: Annotated[AuditEventBatch, Body(openapi_examples=AUDIT_BATCH_EXAMPLES)],
    session: SessionDep,
) -> AuditAppendOutcome:
    """Chain a batch of audit events (1 to 500); idempotent by event id, so retry freely."""
    source = caller.client_id or caller.sub
    result = await append_events(session, body.events, source=source)
    return AuditAppendOutcome(accepted=result.accepted, duplicates=result.duplicates)


@audit_routes.get(
    "/audit-events",
    response_model=Page[AuditEventRead],
    summary="List audit events",
    responses={**USER_AUTH_RESPONSES, **problem_responses(InvalidCursor)},
)
async def list_audit_events(
    user: AdminUser,
    session: SessionDep,
    event_type: TypeFilter = None,
    actor: ActorFilter = None,
    service: ServiceFilter = None,
    since: SinceFilter = None,
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
) -> Page[AuditEventRead]:
    """The audit log, newest first (filters combine; keyset pagination)."""
    rows, next_cursor = await AuditRepository.from_session(session).page(
        types=None if event_type is None else [event_type],
        actor=actor,
        service=service,
        since=since,
        limit=limit,
        cursor=cursor,
    )
    return Page[AuditEventRead](
        items=[AuditEventRead.from_row(row) for row in rows], next_cursor=next_cursor
    )


@audit_routes.get(
    "/audit-events/verify",
    response_model=ChainVerification,
    summary="Verify the audit chain",
    responses=USER_AUTH_RESPONSES,
)
async def verify_audit_chain(user: AdminUser, session: SessionDep) -> ChainVerification:
    """Recompute the hash chain and report the first row that was changed or removed."""
    return ChainVerification.from_result(await verify_chain(session))


@audit_routes.get(
    "/audit-events/stream",
    response_class=EventSourceResponse,
    status_code=200,
    summary="Stream audit events",
    responses=event_stream_responses(
        STREAM_DESCRIPTION,
        example=STREAM_EXAMPLE,
        data_schema={"$ref": "#/components/schemas/AuditEventRead"},
        errors=USER_AUTH_RESPONSES,
    ),
)
async def stream_audit_events(
    user: AdminUser,
    session: SessionDep,
    resources: ResourcesDep,
    event_type: TypeFilter = None,
    service: ServiceFilter = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_DB_INT,
            description=(
                "Resume after this `seq`, for clients that cannot set the `Last-Event-ID` "
                "header (the header wins)."
            ),
        ),
    ] = None,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=MAX_DB_INT,
            description="Resume after this `seq` (sent by EventSource on reconnect).",
        ),
    ] = None,
) -> EventSourceResponse:
    """New audit events as Server-Sent Events, resumable with Last-Event-ID."""
    start = await start_position(session, last_event_id if last_event_id is not None else after)
    feed = audit_event_feed(resources.sessionmaker, start, event_type=event_type, service=service)
    return EventSourceResponse(feed, heartbeat_seconds=HEARTBEAT_SECONDS, expires_at=user.exp)


router.include_router(audit_routes)
router.include_router(policy.router)
