"""``POST /pipelines/webhooks/github``: the GitHub webhook receiver (verify, store, 202)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status

from flightdeck_common.dependencies import inline
from flightdeck_common.errors import JsonTooDeep, PayloadTooLarge, problem_responses
from flightdeck_pipeline.webhooks.schemas import WebhookAck
from flightdeck_pipeline.webhooks.service import (
    DeliveryBacklogFull,
    WebhookService,
    get_webhook_service,
)
from flightdeck_pipeline.webhooks.verification import (
    BodyReadDeadline,
    InvalidDelivery,
    InvalidSignature,
    RepositoryNotAllowed,
    SourceThrottled,
    VerifiedDeliveryDep,
    WebhookNotConfigured,
)

router = APIRouter(prefix="/pipelines/webhooks", tags=["webhooks"])

WebhookServiceDep = Annotated[WebhookService, Depends(inline(get_webhook_service))]

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


@router.post(
    "/github",
    response_model=WebhookAck,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Receive a GitHub webhook delivery",
    responses={
        200: {"model": WebhookAck, "description": "ping answered, or a redelivery (no change)"},
        **problem_responses(
            InvalidSignature,
            RepositoryNotAllowed,
            BodyReadDeadline,
            SourceThrottled,
            InvalidDelivery,
            JsonTooDeep,
            PayloadTooLarge,
            WebhookNotConfigured,
            DeliveryBacklogFull,
        ),
    },
    openapi_extra={"requestBody": WEBHOOK_REQUEST_BODY},
)
async def receive_github_webhook(
    delivery: VerifiedDeliveryDep, service: WebhookServiceDep, response: Response
) -> WebhookAck:
    """Receive a GitHub webhook delivery (signed with one of the configured secrets)."""
    outcome = await service.receive(delivery)
    if outcome in ("pong", "duplicate"):
        response.status_code = status.HTTP_200_OK
    return WebhookAck(delivery_id=delivery.delivery_id, event=delivery.event, result=outcome)
