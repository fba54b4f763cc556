"""API shapes of runs, jobs and log lines."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from fastapi.openapi.models import Example
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flightdeck_common.params import UtcDatetime
from flightdeck_pipeline.runs.status import Conclusion, DisplayStatus, RunStatus


class RunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    repository: str
    run_id: int
    run_attempt: int
    run_number: int | None
    workflow_name: str | None
    name: str | None
    event: str | None
    status: RunStatus
    conclusion: Conclusion | None
    display_status: DisplayStatus
    branch: str | None
    head_sha: str | None
    commit_message: str | None
    actor: str | None
    html_url: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    source: str
    created_at: datetime
    updated_at: datetime


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    job_id: int
    name: str
    status: RunStatus
    conclusion: Conclusion | None
    runner_name: str | None
    steps_count: int
    run_attempt: int
    started_at: datetime | None
    completed_at: datetime | None
    html_url: str | None


class RunDetail(RunRead):
    jobs: list[JobRead]


class LogLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    SUCCESS = "success"


class LogLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_pk: int = Field(description="Flightdeck id of the run (`id` of RunRead).")
    level: LogLevel
    message: str
    logged_at: datetime


class LogLineCreate(BaseModel):
    level: LogLevel = LogLevel.INFO
    message: str = Field(min_length=1, max_length=10_000)
    logged_at: UtcDatetime | None = Field(None, description="Defaults to now.")


class LogLinesCreate(BaseModel):
    lines: list[LogLineCreate] = Field(min_length=1, max_length=500)


class RunUpsert(BaseModel):
    """A run reported by a CI system other than GitHub (same rules as webhooks)."""

    repository: str = Field(min_length=1, max_length=200, examples=["acme/shop"])
    run_id: int = Field(ge=1, le=2**63 - 1, examples=[1042])
    run_attempt: int = Field(1, ge=1, le=10_000)
    run_number: int | None = Field(None, ge=0, le=2**31 - 1)
    workflow_name: str | None = Field(None, max_length=300, examples=["deploy"])
    name: str | None = Field(None, max_length=300)
    event: str | None = Field(None, max_length=64, examples=["push"])
    status: RunStatus = RunStatus.QUEUED
    conclusion: Conclusion | None = None
    branch: str | None = Field(None, max_length=255, examples=["main"])
    head_sha: str | None = Field(None, max_length=64)
    commit_message: str | None = Field(None, max_length=2000)
    actor: str | None = Field(None, max_length=100)
    html_url: str | None = Field(None, max_length=500)
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _conclusion_only_when_completed(self) -> RunUpsert:
        if self.status is RunStatus.COMPLETED and self.conclusion is None:
            raise ValueError("a completed run needs a conclusion")
        if self.status is not RunStatus.COMPLETED and self.conclusion is not None:
            raise ValueError("only a completed run has a conclusion")
        return self


class RunStatusChange(BaseModel):
    status: RunStatus
    conclusion: Conclusion | None = None


RUN_UPSERT_EXAMPLES: dict[str, Example] = {
    "queued": {
        "summary": "A run that was just queued",
        "value": {
            "repository": "acme/shop",
            "run_id": 1042,
            "run_number": 318,
            "workflow_name": "deploy",
            "event": "push",
            "branch": "main",
            "head_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
            "status": "queued",
        },
    },
    "completed": {
        "summary": "The same run, finished",
        "description": "Sent again with the same repository and run_id: the run is updated.",
        "value": {
            "repository": "acme/shop",
            "run_id": 1042,
            "status": "completed",
            "conclusion": "success",
            "started_at": "2026-11-25T10:00:00Z",
            "completed_at": "2026-11-25T10:04:30Z",
        },
    },
}
RUN_STATUS_CHANGE_EXAMPLES: dict[str, Example] = {
    "start": {"summary": "Start a queued run", "value": {"status": "in_progress"}},
    "finish": {
        "summary": "Finish a run",
        "value": {"status": "completed", "conclusion": "failure"},
    },
}
LOG_LINES_EXAMPLES: dict[str, Example] = {
    "lines": {
        "summary": "Two log lines",
        "value": {
            "lines": [
                {"level": "info", "message": "Installing dependencies"},
                {
                    "level": "error",
                    "message": "tests/test_checkout.py::test_total FAILED",
                    "logged_at": "2026-11-25T10:03:12Z",
                },
            ]
        },
    }
}
