"""Routes of the audit log: ingest (service tokens), list, verify, live stream (admins).

Reading the audit log records nothing: there is no audit of the audit.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Request

from flightdeck_admin.audit import policy
from flightdeck_admin.audit.chain import append_events, verify_chain
from flightdeck_admin.audit.exceptions import InvalidPublishedHead, ServiceNotOwnEvent
from flightdeck_admin.audit.head import (
    published_head_is_ours,
    request_keys,
    sign_current_head,
)
from flightdeck_admin.audit.keys import ChainKeys
from flightdeck_admin.audit.repository import AuditRepository, ChainHead
from flightdeck_admin.audit.schemas import (
    AUDIT_BATCH_EXAMPLES,
    NO_NUL_PATTERN,
    AuditAppendOutcome,
    AuditEventBatch,
    AuditEventRead,
    ChainVerification,
    PageCursor,
    PageLimit,
    SignedChainHead,
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
    still_authorized,
)
from flightdeck_common.dependencies import ResourcesDep, SessionDep
from flightdeck_common.errors import InvalidCursor, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_DB_INT, Page
from flightdeck_common.params import UtcDatetime
from flightdeck_common.sse import EventSourceResponse, event_stream_responses

AuditSubmitter = Annotated[TokenClaims, Depends(require_service(ADMIN_INTERNAL_AUDIENCE))]
KeysDep = Annotated[ChainKeys, Depends(request_keys)]
HASH_PATTERN = r"^[0-9a-f]{64}$"

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
    responses={**SERVICE_AUTH_RESPONSES, **problem_responses(ServiceNotOwnEvent)},
)
async def append_audit_events(
    caller: AuditSubmitter,
    body: Annotated[AuditEventBatch, Body(openapi_examples=AUDIT_BATCH_EXAMPLES)],
    session: SessionDep,
    keys: KeysDep,
) -> AuditAppendOutcome:
    """Chain a batch of audit events (1 to 500); idempotent by event id, so retry freely."""
    source = caller.client_id or caller.sub
    # A service writes under its own name only: `service` is bound to the token's subject.
    foreign = sorted({event.service for event in body.events} - {source})
    if foreign:
        raise ServiceNotOwnEvent(
            f"events of service {', '.join(map(repr, foreign))} submitted by account "
            f"{source!r}: an account may submit events of its own service only"
        )
    result = await append_events(session, body.events, source=source, key=keys.chain_key)
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
    responses={**USER_AUTH_RESPONSES, **problem_responses(InvalidPublishedHead)},
)
async def verify_audit_chain(
    user: AdminUser,
    session: SessionDep,
    keys: KeysDep,
    head_seq: Annotated[
        int | None,
        Query(ge=0, le=MAX_DB_INT, description="`seq` of a head published earlier."),
    ] = None,
    head_hash: Annotated[
        str | None, Query(pattern=HASH_PATTERN, max_length=64, description="`hash` of that head.")
    ] = None,
    head_signed_at: Annotated[
        str | None, Query(max_length=40, description="`signed_at` of that head.")
    ] = None,
    head_signature: Annotated[
        str | None, Query(max_length=200, description="`signature` of that head.")
    ] = None,
) -> ChainVerification:
    """Recompute the keyed hash chain and report the first row changed or removed; given
    a head published earlier (all four `head_*`), also report a rewrite since."""
    published = (head_seq, head_hash, head_signed_at, head_signature)
    anchor = None
    if any(value is not None for value in published):
        if head_seq is None or head_hash is None or head_signed_at is None:
            raise InvalidPublishedHead("give head_seq, head_hash, head_signed_at, head_signature")
        if head_signature is None or not published_head_is_ours(
            keys, head_seq, head_hash, head_signed_at, head_signature
        ):
            raise InvalidPublishedHead("the head's signature is not by this audit signing key")
        anchor = ChainHead(head_seq, head_hash)
    result = await verify_chain(session, key=keys.chain_key, anchor=anchor)
    return ChainVerification.from_result(result)


@audit_routes.get(
    "/audit-events/head",
    response_model=SignedChainHead,
    summary="Signed audit chain head",
    responses=USER_AUTH_RESPONSES,
)
async def signed_audit_chain_head(
    user: AdminUser, resources: ResourcesDep, keys: KeysDep
) -> SignedChainHead:
    """The current chain head signed with the audit signing key, to keep elsewhere."""
    signed = await sign_current_head(resources, keys)
    return SignedChainHead.model_validate(signed, from_attributes=True)


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
    request: Request,
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
    return EventSourceResponse(
        feed,
        heartbeat_seconds=HEARTBEAT_SECONDS,
        expires_at=user.exp,
        still_authorized=still_authorized(request, user),
    )


router.include_router(audit_routes)
router.include_router(policy.router)
