"""What a write to a deployment, its statuses, the pushed commits or an incident says: the
records the deployments repository applies, whatever their source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class DeploymentUpdate:
    repository: str
    deployment_id: int
    environment: str
    production_flag: bool | None
    sha: str
    ref: str | None
    creator: str | None
    created_at: datetime


@dataclass(frozen=True)
class DeploymentStatusUpdate:
    deployment: DeploymentUpdate
    status_id: int
    state: str
    occurred_at: datetime


@dataclass(frozen=True)
class PushedCommit:
    sha: str
    committed_at: datetime | None


@dataclass(frozen=True)
class PushUpdate:
    repository: str
    ref: str
    pushed_at: datetime
    commits: list[PushedCommit] = field(default_factory=list)


@dataclass(frozen=True)
class IncidentUpdate:
    repository: str
    issue_number: int
    title: str
    opened_at: datetime
    resolved_at: datetime | None
    # The issue's updated_at: an update older than the stored one changes nothing.
    source_updated_at: datetime | None = None
