"""API shapes of deployments and incidents."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from fastapi.openapi.models import Example
from pydantic import BaseModel, ConfigDict, Field

from flightdeck_common.params import UtcDatetime


class DeploymentState(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    INACTIVE = "inactive"


class DeploymentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    repository: str
    deployment_id: int | None
    environment: str
    production: bool
    sha: str
    ref: str | None
    creator: str | None
    status: DeploymentState
    deployed_at: datetime
    succeeded_at: datetime | None
    failed_at: datetime | None
    source: str


class DeploymentCreate(BaseModel):
    """A deployment made by a system that is not GitHub."""

    repository: str = Field(min_length=1, max_length=200, examples=["acme/shop"])
    environment: str = Field(min_length=1, max_length=100, examples=["production"])
    sha: str = Field(min_length=4, max_length=64, pattern=r"^[0-9a-fA-F]+$")
    ref: str | None = Field(None, max_length=255, examples=["main"])
    status: DeploymentState = DeploymentState.SUCCESS
    production: bool | None = Field(
        None, description="Defaults to whether the environment is a configured production one."
    )
    deployed_at: UtcDatetime | None = Field(None, description="Defaults to now.")


class IncidentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    repository: str
    issue_number: int | None
    title: str
    opened_at: datetime
    resolved_at: datetime | None
    deployment_pk: int | None = Field(description="The deployment it is attributed to.")
    source: str


class IncidentCreate(BaseModel):
    repository: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=500)
    opened_at: UtcDatetime | None = Field(None, description="Defaults to now.")


class IncidentResolve(BaseModel):
    resolved_at: UtcDatetime | None = Field(None, description="Defaults to now.")


DEPLOYMENT_EXAMPLES: dict[str, Example] = {
    "production": {
        "summary": "A successful production deployment",
        "value": {
            "repository": "acme/shop",
            "environment": "production",
            "sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
            "ref": "main",
            "status": "success",
            "deployed_at": "2026-11-25T10:06:00Z",
        },
    }
}
INCIDENT_EXAMPLES: dict[str, Example] = {
    "outage": {
        "summary": "An incident opened now",
        "value": {"repository": "acme/shop", "title": "Checkout returns 500 for every cart"},
    }
}
INCIDENT_RESOLVE_EXAMPLES: dict[str, Example] = {
    "now": {"summary": "Resolved now", "value": {}},
    "earlier": {
        "summary": "Resolved at a given time",
        "value": {"resolved_at": "2026-11-25T11:30:00Z"},
    },
}
