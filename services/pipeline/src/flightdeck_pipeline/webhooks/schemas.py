"""API shapes of the webhook receiver."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class WebhookAck(BaseModel):
    delivery_id: str | None = None
    event: str
    result: Literal["pong", "processed", "ignored", "failed", "duplicate"] = Field(
        description=(
            "processed: mapped; ignored: stored, not an event Flightdeck maps; failed: stored "
            "with the mapping error (a redelivery retries it); duplicate: already received."
        )
    )
