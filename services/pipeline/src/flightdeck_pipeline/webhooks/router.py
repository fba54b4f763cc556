"""``POST /pipelines/webhooks/github``: the GitHub webhook receiver."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response, status
from fastapi.security import APIKeyHeader
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_common.db import session_scope
from flightdeck_common.errors import (
    BadRequest,
    JsonTooDeep,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    problem_responses,
)
from flightdeck_common.resources import get_resources
from flightdeck_pipeline.outbox import audit
from flightdeck_pipeline.runtime import PipelineRuntime, get_runtime
from flightdeck_pipeline.webhooks.events import GITHUB_EVENTS
from flightdeck_pipeline.webhooks.github import MappingError
from flightdeck_pipeline.webhooks.metrics import DELIVERIES, INGEST_SECONDS, SIGNATURE_FAILURES
from flightdeck_pipeline.webhooks.repository import PENDING, DeliveryRepository
from flightdeck_pipeline.webhooks.schemas import WebhookAck
from flightdeck_pipeline.webhooks.service import (
    EVENT_SCOPES,
    MAPPED_EVENTS,
    map_delivery,
    parse_body,
)
from flightdeck_pipeline.webhooks.signatures import signature_matches

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/pipelines/webhooks", tags=["webhooks"])

EVENT_NAME = re.compile(r"^[a-z_]{1,64}$")
DELIVERY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")

# Declares the HMAC signature header as this route's security scheme; the route checks it
# itself (after reading the raw body), so a missing header is not refused here.
github_signature = APIKeyHeader(
    name="X-Hub-Signature-256",
    scheme_name="GitHubSignature",
    description=(
        "`sha256=` and the hex HMAC-SHA256 of the raw request body keyed with the webhook "
        "secret, as GitHub sends it. Any of the configured secrets "
        "(`FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS`) may sign."
    ),
    auto_error=False,
)

# The body is read raw (the signature covers its exact bytes), so FastAPI does not
# document it by itself.
WEBHOOK_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": (
        "The delivery's JSON payload exactly as GitHub sends it (configure the webhook "
        "with content type `application/json`); its shape depends on `X-GitHub-Event`."
    ),
    "content": {
        "application/json": {
            "schema": {"type": "object", "additionalProperties": True},
            "examples": {
                "ping": {
                    "summary": "ping (sent when the webhook is created)",
                    "value": {"zen": "Keep it logically awesome.", "hook_id": 4242},
                },
                "workflow_run": {
                    "summary": "workflow_run (abridged)",
                    "value": {
                        "action": "completed",
                        "workflow_run": {
                            "id": 1042,
                            "run_number": 318,
                            "run_attempt": 1,
                            "name": "deploy",
                            "event": "push",
                            "status": "completed",
                            "conclusion": "success",
                            "head_branch": "main",
                            "head_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
                            "run_started_at": "2026-11-25T10:00:00Z",
                            "updated_at": "2026-11-25T10:04:30Z",
                        },
                        "repository": {"full_name": "acme/shop"},
                    },
                },
            },
        }
    },
}


class InvalidSignature(Unauthorized):
    code = "invalid_signature"
    title = "Missing or invalid X-Hub-Signature-256"


class WebhookNotConfigured(ServiceUnavailable):
    code = "webhook_not_configured"
    title = "No GitHub webhook secret is configured"


class InvalidDelivery(BadRequest):
    code = "invalid_delivery"
    title = "Not a valid GitHub delivery"


@router.post(
    "/github",
    response_model=WebhookAck,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Receive a GitHub webhook delivery",
    responses={
        200: {"model": WebhookAck, "description": "ping answered, or a redelivery (no change)"},
        **problem_responses(
            InvalidSignature, InvalidDelivery, JsonTooDeep, PayloadTooLarge, WebhookNotConfigured
        ),
    },
    openapi_extra={"requestBody": WEBHOOK_REQUEST_BODY},
)
async def receive_github_webhook(
    request: Request,
    response: Response,
    x_hub_signature_256: Annotated[str | None, Depends(github_signature)],
    x_github_event: Annotated[
        str | None,
        Header(alias="X-GitHub-Event", description="The event name, e.g. `workflow_run`."),
    ] = None,
    x_github_delivery: Annotated[
        str | None,
        Header(
            alias="X-GitHub-Delivery",
            description="Unique id of the delivery; a redelivery repeats it (deduplicated).",
        ),
    ] = None,
) -> WebhookAck:
    """Receive a GitHub webhook delivery (signed with one of the configured secrets)."""
    started = time.perf_counter()
    runtime = get_runtime(request)
    secrets = [s.get_secret_value() for s in runtime.settings.github_webhook_secrets]
    if not secrets:
        raise WebhookNotConfigured(
            "Set FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS and use the same secret on GitHub."
        )
    body = await request.body()
    event = x_github_event or ""
    if not signature_matches(secrets, body, x_hub_signature_256):
        SIGNATURE_FAILURES.inc()
        DELIVERIES.labels(event if event in GITHUB_EVENTS else "unknown", "rejected").inc()
        await _audit_rejection(request, runtime, event, x_github_delivery)
        raise InvalidSignature("The body is not signed with a configured webhook secret.")
    if not EVENT_NAME.match(event):
        raise InvalidDelivery("X-GitHub-Event is missing or malformed.")
    if event not in GITHUB_EVENTS:
        raise InvalidDelivery(f"{event!r} is not a GitHub webhook event.")
    if event == "ping":
        DELIVERIES.labels(event, "pong").inc()
        response.status_code = status.HTTP_200_OK
        return WebhookAck(delivery_id=x_github_delivery, event=event, result="pong")
    if not x_github_delivery or not DELIVERY_ID.match(x_github_delivery):
        raise InvalidDelivery("X-GitHub-Delivery is missing or malformed.")
    try:
        payload = parse_body(body, runtime.settings.webhook_max_json_depth)
    except ValueError as exc:
        raise InvalidDelivery("The body is not a JSON object.") from exc

    result = await _ingest(request, runtime, event, x_github_delivery, payload, body)
    DELIVERIES.labels(event, result).inc()
    INGEST_SECONDS.labels(event).observe(time.perf_counter() - started)
    if result == "duplicate":
        response.status_code = status.HTTP_200_OK
    return WebhookAck(delivery_id=x_github_delivery, event=event, result=result)  # type: ignore[arg-type]


# What a payload problem raises while it is mapped: the delivery is kept as failed.
MAPPING_FAILURES: tuple[type[Exception], ...] = (
    MappingError,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
    # Values the database refuses (too long, out of range): a payload problem, kept.
    sa_exc.DataError,
    sa_exc.IntegrityError,
)


async def _ingest(
    request: Request,
    runtime: PipelineRuntime,
    event: str,
    delivery_id: str,
    payload: dict[str, object],
    body: bytes,
) -> str:
    """Store the delivery raw and map it, in one transaction; answered after it committed.

    A payload that cannot be mapped rolls that transaction back, and the raw delivery is
    then stored with its error in a transaction of its own; so is any other failure
    (stored ``pending``, then raised): what reached this point is kept either way, as when
    storing came first in its own transaction, for one commit instead of two. A concurrent
    copy of the delivery waits at its insert until this one commits (then: duplicate) or
    rolls back (then it maps the delivery itself).
    """
    sessionmaker = get_resources(request).sessionmaker
    action = payload.get("action")
    action_text = str(action)[:64] if action is not None else None
    mapped = event in MAPPED_EVENTS
    expected = "processed" if mapped else "ignored"
    try:
        async with session_scope(sessionmaker) as session:
            deliveries = DeliveryRepository(session)
            first = await deliveries.store(delivery_id, event, action_text, body, result=expected)
            if not first and await deliveries.result_of(delivery_id) not in (PENDING, "failed"):
                return "duplicate"  # a redelivery changes nothing
            result = expected
            if mapped:
                # Upserts make a retry (or a racing copy) harmless.
                result = await map_delivery(
                    session,
                    runtime.settings,
                    event=event,
                    delivery_id=delivery_id,
                    payload=payload,
                    record_change=runtime.record_change,
                    attribute_incident=runtime.attribute_incident,
                    deployment_succeeded=runtime.deployment_succeeded,
                )
            if not first or result != expected:
                await deliveries.finish(delivery_id, result)
    except MAPPING_FAILURES as exc:
        logger.warning("delivery %s (%s) could not be mapped: %s", delivery_id, event, exc)
        await _keep(sessionmaker, delivery_id, event, action_text, body, exc)
        return "failed"
    except Exception:
        # Not the payload's fault (database gone, a bug): keep it for reprocessing.
        with contextlib.suppress(Exception):
            await _keep(sessionmaker, delivery_id, event, action_text, body, None)
        raise
    if mapped:
        await runtime.after_write(*EVENT_SCOPES[event])
    return result


async def _keep(
    sessionmaker: async_sessionmaker[AsyncSession],
    delivery_id: str,
    event: str,
    action: str | None,
    body: bytes,
    failure: Exception | None,
) -> None:
    """Store the raw delivery after its mapping was rolled back: ``failed`` with the error
    (``failure``), else ``pending``."""
    async with session_scope(sessionmaker) as session:
        deliveries = DeliveryRepository(session)
        await deliveries.store(delivery_id, event, action, body)
        if failure is not None:
            await deliveries.finish(delivery_id, "failed", f"{type(failure).__name__}: {failure}")


async def _audit_rejection(
    request: Request, runtime: PipelineRuntime, event: str, delivery_id: str | None
) -> None:
    ip = request.client.host if request.client else None
    async with session_scope(get_resources(request).sessionmaker) as session:
        await audit(
            session,
            "webhook.signature_rejected",
            actor=None,
            ip=ip,
            event=event[:64] or None,
            delivery_id=(delivery_id or "")[:64] or None,
        )
