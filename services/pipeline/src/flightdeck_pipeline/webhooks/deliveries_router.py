"""``/pipelines/webhooks/deliveries``: stored GitHub deliveries (operator reads, admin
reprocesses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.db import session_scope
from flightdeck_common.errors import InvalidCursor, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from flightdeck_common.params import UtcDatetime
from flightdeck_common.resources import get_resources
from flightdeck_pipeline.dependencies import (
    USER_AUTH_RESPONSES,
    AdminUser,
    OperatorUser,
    ReadSessionDep,
    RuntimeDep,
)
from flightdeck_pipeline.webhooks import deliveries_service as service
from flightdeck_pipeline.webhooks.deliveries_repository import DeliveryFilter
from flightdeck_pipeline.webhooks.deliveries_schemas import (
    BULK_REPROCESS_EXAMPLES,
    DELIVERY_ID_PATTERN,
    EVENT_PATTERN,
    BulkReprocess,
    BulkReprocessResult,
    DeliveryRead,
    DeliveryResult,
)
from flightdeck_pipeline.webhooks.deliveries_service import (
    BacklogWouldOverflow,
    DeliveryNotFound,
    DeliveryPending,
    TooManyDeliveries,
)

router = APIRouter(
    prefix="/pipelines/webhooks/deliveries", tags=["webhooks"], responses=USER_AUTH_RESPONSES
)

DeliveryIdPath = Annotated[
    str,
    Path(
        pattern=DELIVERY_ID_PATTERN,
        max_length=64,
        description="GitHub's delivery id (`X-GitHub-Delivery`).",
        examples=["72d3162e-cc78-11e3-81ab-4c9367dc0958"],
    ),
]


async def get_reprocess_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction; once it committed, the delivery worker of this process
    is woken (before, it would not see the deliveries set back to pending)."""
    async with session_scope(get_resources(request).sessionmaker) as session:
        yield session
    worker = getattr(request.app.state, "delivery_worker", None)
    if worker is not None:
        worker.wake()


ReprocessSessionDep = Annotated[AsyncSession, Depends(get_reprocess_session, scope="function")]


@router.get(
    "",
    response_model=Page[DeliveryRead],
    summary="List stored webhook deliveries",
    responses=problem_responses(InvalidCursor),
)
async def list_deliveries(
    user: OperatorUser,
    session: ReadSessionDep,
    result: DeliveryResult | None = None,
    event: Annotated[
        str | None, Query(pattern=EVENT_PATTERN, max_length=64, description="`X-GitHub-Event`.")
    ] = None,
    since: Annotated[UtcDatetime | None, Query(description="Received at or after.")] = None,
    until: Annotated[UtcDatetime | None, Query(description="Received before.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[DeliveryRead]:
    """Stored deliveries, newest first, without their bodies (filters combine)."""
    selection = DeliveryFilter(
        result=result.value if result else None, event=event, since=since, until=until
    )
    return await service.list_deliveries(session, selection, limit=limit, cursor=cursor)


@router.post(
    "/reprocess",
    response_model=BulkReprocessResult,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Reprocess the deliveries a filter selects",
    responses=problem_responses(TooManyDeliveries, BacklogWouldOverflow),
)
async def reprocess_deliveries(
    body: Annotated[BulkReprocess, Body(openapi_examples=BULK_REPROCESS_EXAMPLES)],
    user: AdminUser,
    session: ReprocessSessionDep,
    runtime: RuntimeDep,
) -> BulkReprocessResult:
    """Set the selected deliveries (failed by default) back to pending, at most 100,000."""
    return await service.reprocess_deliveries(
        session,
        body,
        actor=user.actor_name,
        backlog_limit=runtime.settings.webhook_backlog_limit,
    )


@router.get(
    "/{delivery_id}",
    response_model=DeliveryRead,
    summary="Read a stored webhook delivery",
    responses=problem_responses(DeliveryNotFound),
)
async def read_delivery(
    delivery_id: DeliveryIdPath, user: OperatorUser, session: ReadSessionDep
) -> DeliveryRead:
    """One stored delivery, without its body."""
    return await service.get_delivery(session, delivery_id)


@router.post(
    "/{delivery_id}/reprocess",
    response_model=DeliveryRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Reprocess a stored webhook delivery",
    responses=problem_responses(DeliveryNotFound, DeliveryPending),
)
async def reprocess_delivery(
    delivery_id: DeliveryIdPath, user: AdminUser, session: ReprocessSessionDep
) -> DeliveryRead:
    """Set a delivery back to pending so that it is mapped again."""
    return await service.reprocess_delivery(session, delivery_id, actor=user.actor_name)
