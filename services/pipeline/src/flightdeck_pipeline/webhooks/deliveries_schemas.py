"""API shapes of the stored webhook deliveries (read by operators, reprocessed by admins)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from fastapi.openapi.models import Example
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flightdeck_common.params import UtcDatetime

# GitHub's delivery ids (X-GitHub-Delivery) and event names (X-GitHub-Event).
DELIVERY_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
EVENT_PATTERN = r"^[a-z_]{1,64}$"


class DeliveryResult(StrEnum):
    """A delivery's state (``webhooks.models.RESULTS``)."""

    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class ReprocessableResult(StrEnum):
    """What a bulk reprocess may select: a pending delivery is already queued."""

    FAILED = "failed"
    PROCESSED = "processed"
    IGNORED = "ignored"


class DeliveryRead(BaseModel):
    """A stored delivery without its body (``body_size`` says how large it is)."""

    model_config = ConfigDict(from_attributes=True)

    delivery_id: str = Field(examples=["72d3162e-cc78-11e3-81ab-4c9367dc0958"])
    event: str = Field(examples=["workflow_run"])
    action: str | None = Field(examples=["completed"])
    result: DeliveryResult = Field(
        description=(
            "pending: waiting to be mapped; processed: mapped; ignored: an event Flightdeck "
            "does not map; failed: the mapping refused the payload (see `error`)."
        )
    )
    error: str | None = Field(description="Why the mapping failed (failed deliveries).")
    attempts: int = Field(description="Mapping attempts so far (kept when reprocessed).")
    received_at: datetime
    processed_at: datetime | None
    retry_at: datetime | None = Field(
        description="A pending delivery whose mapping raised: not tried again before this."
    )
    body_size: int = Field(description="Size of the stored raw body, in bytes.")


class BulkReprocess(BaseModel):
    """Which stored deliveries to map again (filters combine)."""

    model_config = ConfigDict(extra="forbid")

    result: ReprocessableResult = Field(
        ReprocessableResult.FAILED, description="Deliveries with this result."
    )
    event: str | None = Field(None, pattern=EVENT_PATTERN, max_length=64, examples=["workflow_run"])
    since: UtcDatetime | None = Field(None, description="Received at or after this time.")
    until: UtcDatetime | None = Field(None, description="Received before this time.")

    @model_validator(mode="after")
    def _since_before_until(self) -> BulkReprocess:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be later than since")
        return self


class BulkReprocessResult(BaseModel):
    reprocessed: int = Field(description="Deliveries set back to pending.")


BULK_REPROCESS_EXAMPLES: dict[str, Example] = {
    "failed": {"summary": "Every failed delivery", "value": {}},
    "failed_runs_today": {
        "summary": "Failed workflow_run deliveries received since a given time",
        "value": {"result": "failed", "event": "workflow_run", "since": "2026-12-07T00:00:00Z"},
    },
}
