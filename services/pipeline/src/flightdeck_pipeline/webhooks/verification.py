"""The receiver's checks before anything is stored: a verified delivery, or a 4xx problem.

``verified_delivery`` is the route's dependency: it reads the raw body, verifies
``X-Hub-Signature-256`` (before parsing anything), then the event and delivery id headers,
the nesting depth and that the body is a JSON object. An unsigned delivery is audited and
counted; nothing of a refused request is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader

from flightdeck_common.db import session_scope
from flightdeck_common.errors import BadRequest, ServiceUnavailable, Unauthorized
from flightdeck_common.resources import get_resources
from flightdeck_pipeline.outbox import audit
from flightdeck_pipeline.runtime import get_runtime
from flightdeck_pipeline.webhooks.events import GITHUB_EVENTS
from flightdeck_pipeline.webhooks.metrics import DELIVERIES, SIGNATURE_FAILURES
from flightdeck_pipeline.webhooks.payloads import parse_body
from flightdeck_pipeline.webhooks.signatures import signature_matches

EVENT_NAME = re.compile(r"^[a-z_]{1,64}$")
DELIVERY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")

# Declares the HMAC signature header as this route's security scheme; the dependency
# checks it itself (after reading the raw body), so a missing header is not refused here.
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


class InvalidSignature(Unauthorized):
    code = "invalid_signature"
    title = "Missing or invalid X-Hub-Signature-256"


class WebhookNotConfigured(ServiceUnavailable):
    code = "webhook_not_configured"
    title = "No GitHub webhook secret is configured"


class InvalidDelivery(BadRequest):
    code = "invalid_delivery"
    title = "Not a valid GitHub delivery"


@dataclass(frozen=True)
class VerifiedDelivery:
    """A delivery whose signature, headers and JSON were checked (``delivery_id`` may be
    None only for ``ping``)."""

    event: str
    delivery_id: str | None
    action: str | None
    body: bytes


async def verified_delivery(
    request: Request,
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
) -> VerifiedDelivery:
    """The request as a verified delivery, or the 4xx problem that refuses it."""
    settings = get_runtime(request).settings
    secrets = [s.get_secret_value() for s in settings.github_webhook_secrets]
    if not secrets:
        raise WebhookNotConfigured(
            "Set FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS and use the same secret on GitHub."
        )
    body = await request.body()
    event = x_github_event or ""
    if not signature_matches(secrets, body, x_hub_signature_256):
        SIGNATURE_FAILURES.inc()
        DELIVERIES.labels(event if event in GITHUB_EVENTS else "unknown", "rejected").inc()
        await _audit_rejection(request, event, x_github_delivery)
        raise InvalidSignature("The body is not signed with a configured webhook secret.")
    if not EVENT_NAME.match(event):
        raise InvalidDelivery("X-GitHub-Event is missing or malformed.")
    if event not in GITHUB_EVENTS:
        raise InvalidDelivery(f"{event!r} is not a GitHub webhook event.")
    if event == "ping":
        return VerifiedDelivery(event, x_github_delivery, None, body)
    if not x_github_delivery or not DELIVERY_ID.match(x_github_delivery):
        raise InvalidDelivery("X-GitHub-Delivery is missing or malformed.")
    try:
        payload = parse_body(body, settings.webhook_max_json_depth)
    except ValueError as exc:
        raise InvalidDelivery("The body is not a JSON object.") from exc
    action = payload.get("action")
    return VerifiedDelivery(
        event, x_github_delivery, str(action)[:64] if action is not None else None, body
    )


async def _audit_rejection(request: Request, event: str, delivery_id: str | None) -> None:
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


VerifiedDeliveryDep = Annotated[VerifiedDelivery, Depends(verified_delivery)]
