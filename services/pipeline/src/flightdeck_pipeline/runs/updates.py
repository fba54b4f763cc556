"""What a write to a run or a job says: the records the run service and repository apply,
whatever their source (a GitHub delivery, the runs API, a reconciliation)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flightdeck_pipeline.runs.status import Conclusion, RunStatus


@dataclass(frozen=True)
class RunUpdate:
    repository: str
    run_id: int
    run_attempt: int
    status: RunStatus
    conclusion: Conclusion | None
    source_updated_at: datetime | None
    run_number: int | None = None
    workflow_name: str | None = None
    name: str | None = None
    event: str | None = None
    branch: str | None = None
    head_sha: str | None = None
    commit_message: str | None = None
    actor: str | None = None
    html_url: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class JobUpdate:
    repository: str
    run_id: int
    job_id: int
    run_attempt: int
    name: str
    status: RunStatus
    conclusion: Conclusion | None
    runner_name: str | None
    steps_count: int
    started_at: datetime | None
    completed_at: datetime | None
    html_url: str | None
    head_sha: str | None
    branch: str | None
    workflow_name: str | None
    source_updated_at: datetime | None
