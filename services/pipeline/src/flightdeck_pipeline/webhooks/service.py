"""The ingest policy: what the receiver does with a verified delivery.

Accepting is storing, nothing else: the delivery is appended raw (``pending`` when it is
an event Flightdeck maps, ``ignored`` otherwise) in a commit it may share with concurrent
deliveries (``acceptance.py``), and answered once that commit succeeded. Mapping happens
behind the acknowledgement (``worker.py``). The only refusal of a signed delivery is the
hard backlog bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from flightdeck_common.errors import ServiceUnavailable
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks.acceptance import DeliveryAcceptor
from flightdeck_pipeline.webhooks.mapping import MAPPED_EVENTS
from flightdeck_pipeline.webhooks.metrics import BACKLOG_REFUSALS, DELIVERIES, INGEST_SECONDS
from flightdeck_pipeline.webhooks.models import IGNORED, PENDING
from flightdeck_pipeline.webhooks.repository import NewDelivery
from flightdeck_pipeline.webhooks.verification import VerifiedDelivery
from flightdeck_pipeline.webhooks.worker import DeliveryWorker

Outcome = Literal["pong", "accepted", "ignored", "duplicate"]


class DeliveryBacklogFull(ServiceUnavailable):
    code = "delivery_backlog_full"
    title = "Too many deliveries waiting to be mapped"


@dataclass
class WebhookService:
    settings: Settings
    acceptor: DeliveryAcceptor
    worker: DeliveryWorker

    async def receive(self, delivery: VerifiedDelivery) -> Outcome:
        """Store ``delivery`` durably (or answer a ping); raises DeliveryBacklogFull past
        the backlog bound."""
        started = time.perf_counter()
        if delivery.event == "ping":
            DELIVERIES.labels("ping", "pong").inc()
            return "pong"
        assert delivery.delivery_id is not None  # checked for every event but ping
        mapped = delivery.event in MAPPED_EVENTS
        if mapped and self.worker.backlog >= self.settings.webhook_backlog_limit:
            BACKLOG_REFUSALS.inc()
            DELIVERIES.labels(delivery.event, "refused").inc()
            retry_after = self.settings.webhook_backlog_retry_after_seconds
            raise DeliveryBacklogFull(
                f"{self.worker.backlog} deliveries are waiting to be mapped (the bound is "
                f"{self.settings.webhook_backlog_limit}); this one was not stored.",
                headers={"Retry-After": str(retry_after)},
            )
        outcome = await self.acceptor.accept(
            NewDelivery(
                delivery_id=delivery.delivery_id,
                event=delivery.event,
                action=delivery.action,
                body=delivery.body,
                result=PENDING if mapped else IGNORED,
            )
        )
        DELIVERIES.labels(delivery.event, outcome).inc()
        INGEST_SECONDS.labels(delivery.event).observe(time.perf_counter() - started)
        return outcome  # type: ignore[return-value]


def get_webhook_service(request: Request) -> WebhookService:
    service: WebhookService = request.app.state.webhook_service
    return service
