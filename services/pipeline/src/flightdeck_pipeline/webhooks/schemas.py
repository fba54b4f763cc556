"""API shapes of the webhook receiver."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class WebhookAck(BaseModel):
    delivery_id: str | None = None
    event: str
    result: Literal["pong", "accepted", "ignored", "duplicate"] = Field(
        description=(
            "accepted: stored, to be mapped behind this answer (see "
            "`GET /pipelines/webhooks/deliveries/{delivery_id}`); ignored: stored, not an "
            "event Flightdeck maps; duplicate: already received (a redelivery of one kept "
            "as failed is accepted again); pong: the answer to `ping`."
        )
    )
