"""The receiver's checks before anything is stored: a verified delivery, or a 4xx problem.

``verified_delivery`` is the route's dependency. Before the body is read: a missing or
malformed ``X-Hub-Signature-256`` gets 401, and a source flagged for too many rejections
lately gets 429 past a few concurrent reads (``rejections.py``). Then the body is read
within a deadline (408 past it; shorter for a flagged source), the signature verified
(before parsing anything), the event and delivery id headers, the nesting depth and that
the body is a JSON object checked, and the signing secret must be allowed to write the
payload's ``repository.full_name`` (403 otherwise, ``secret_scopes.py``). Rejections are
counted, limited and audited aggregated per source (``rejection_audit.py``); nothing of a
refused request is stored.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader

from flightdeck_common.errors import (
    BadRequest,
    Forbidden,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
)
from flightdeck_common.rate_limit import client_address_key
from flightdeck_common.resources import get_resources
from flightdeck_pipeline.runtime import get_runtime
from flightdeck_pipeline.webhooks.events import GITHUB_EVENTS
from flightdeck_pipeline.webhooks.mapping import MAPPED_EVENTS
from flightdeck_pipeline.webhooks.metrics import (
    DELIVERIES,
    REPOSITORY_REFUSALS,
    SIGNATURE_FAILURES,
    THROTTLED_SOURCES,
)
from flightdeck_pipeline.webhooks.payloads import parse_body
from flightdeck_pipeline.webhooks.rejections import (
    FLAGGED_BODY_READ_SECONDS,
    SignatureRejections,
)
from flightdeck_pipeline.webhooks.signatures import is_well_formed, matching_secret

logger = logging.getLogger(__name__)
SIGNATURE_FAILURES_LIMIT = "webhook_signature_failures"
# The body of a refused request stays unread on the wire: the connection is closed.
CLOSE = {"Connection": "close"}

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


class SourceThrottled(RateLimited):
    code = "webhook_source_throttled"
    title = "Too many webhook requests with a bad signature from this address"


class BodyReadDeadline(RequestTimeout):
    code = "body_read_deadline"
    title = "The webhook body did not arrive in time"


class RepositoryNotAllowed(Forbidden):
    code = "repository_not_allowed"
    title = "The signing secret may not write this repository"


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
    started = time.monotonic()
    settings = get_runtime(request).settings
    secrets = settings.github_webhook_secrets
    if not secrets:
        raise WebhookNotConfigured(
            "Set FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS and use the same secret on GitHub."
        )
    event = x_github_event or ""
    source = client_address_key(request)
    rejections = signature_rejections(request)
    if not is_well_formed(x_hub_signature_256):
        await _reject(request, source, "missing_signature", event, x_github_delivery)
        raise InvalidSignature(
            "X-Hub-Signature-256 is missing or is not sha256= and 64 hex digits.", headers=CLOSE
        )
    deadline = settings.webhook_body_read_deadline_seconds
    flagged_for = rejections.flagged_for(source)
    if flagged_for > 0:
        # Too many rejections from this source lately: few bodies at once, read quickly.
        if not rejections.start_read(source):
            THROTTLED_SOURCES.inc()
            DELIVERIES.labels(_event_label(event), "throttled").inc()
            rejections.throttled(source)
            raise SourceThrottled(
                "Too many requests with a missing or wrong signature from this address; "
                "retry in 1 s.",
                headers={**CLOSE, "Retry-After": "1"},
            )
        deadline = min(deadline, FLAGGED_BODY_READ_SECONDS)
    try:
        async with asyncio.timeout(max(0.0, deadline - (time.monotonic() - started))):
            body = await request.body()
    except TimeoutError:
        await _reject(request, source, "body_read_deadline", event, x_github_delivery)
        raise BodyReadDeadline(
            f"The body did not arrive within {deadline:g} s.", headers=CLOSE
        ) from None
    finally:
        if flagged_for > 0:
            rejections.end_read(source)
    secret = matching_secret(secrets, body, x_hub_signature_256)
    if secret is None:
        await _reject(request, source, "wrong_signature", event, x_github_delivery)
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
    if secret.repositories is not None:
        _check_repository(event, payload, secret.may_write)
    action = payload.get("action")
    return VerifiedDelivery(
        event, x_github_delivery, str(action)[:64] if action is not None else None, body
    )


def _check_repository(event: str, payload: dict[str, Any], may_write: Any) -> None:
    """Refuse a delivery whose (restricted) secret may not write its repository; a mapped
    event must name one (unmapped events without a repository write nothing)."""
    repository = payload.get("repository")
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    if full_name is None and event not in MAPPED_EVENTS:
        return
    if not isinstance(full_name, str):
        reason, detail = "no_repository", "The payload names no repository.full_name."
    elif not may_write(full_name):
        reason = "repository_not_allowed"
        detail = f"The secret that signed this delivery may not write {full_name[:200]!r}."
    else:
        return
    REPOSITORY_REFUSALS.labels(reason).inc()
    DELIVERIES.labels(event, "forbidden").inc()
    logger.warning("webhook delivery refused (%s): %s", reason, detail)
    raise RepositoryNotAllowed(detail)


def signature_rejections(request: Request) -> SignatureRejections:
    """This app's per-source record of rejected signatures (made by the lifespan)."""
    rejections: SignatureRejections = request.app.state.webhook_signature_rejections
    return rejections


def _event_label(event: str) -> str:
    return event if event in GITHUB_EVENTS else "unknown"


async def _reject(
    request: Request, source: str, reason: str, event: str, delivery_id: str | None
) -> None:
    """Count a rejected request: metrics, the source's limit (blocked past it), and the
    source's tally, audited aggregated (``rejection_audit.py``), never one event each."""
    SIGNATURE_FAILURES.inc()
    DELIVERIES.labels(_event_label(event), "rejected").inc()
    rejections = signature_rejections(request)
    rejections.rejected(source, reason, event[:64] or None, delivery_id)
    limiter = get_resources(request).rate_limiter
    allowed, _, reset_in = await limiter.hit(SIGNATURE_FAILURES_LIMIT, source)
    if not allowed:
        rejections.flag(source, reset_in)


VerifiedDeliveryDep = Annotated[VerifiedDelivery, Depends(verified_delivery)]
