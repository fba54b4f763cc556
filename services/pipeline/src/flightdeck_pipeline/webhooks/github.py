"""GitHub webhook payloads -> the domains' update records (no database here).

Each ``parse_*`` function raises :class:`MappingError` when a field it needs is missing
or malformed; the delivery is then kept with that error and can be reprocessed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flightdeck_pipeline.deployments.updates import (
    DeploymentStatusUpdate,
    DeploymentUpdate,
    IncidentUpdate,
    PushedCommit,
    PushUpdate,
)
from flightdeck_pipeline.runs.status import Conclusion, RunStatus, normalize_status
from flightdeck_pipeline.runs.updates import JobUpdate, RunUpdate


class MappingError(ValueError):
    """The payload does not have the shape this mapper understands."""


def _get(data: Any, *path: str, required: bool = True) -> Any:
    value = data
    for key in path:
        if not isinstance(value, dict) or key not in value or value[key] is None:
            if required:
                raise MappingError(f"missing field: {'.'.join(path)}")
            return None
        value = value[key]
    return value


def _text(data: Any, *path: str, limit: int, required: bool = False) -> str | None:
    value = _get(data, *path, required=required)
    if value is None:
        return None
    if not isinstance(value, str | int):
        raise MappingError(f"not a string: {'.'.join(path)}")
    return str(value)[:limit]


def _int(data: Any, *path: str, required: bool = True, bits: int = 64) -> int | None:
    """An integer that fits a signed ``bits``-bit column."""
    value = _get(data, *path, required=required)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MappingError(f"not an integer: {'.'.join(path)}")
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise MappingError(f"integer out of range: {'.'.join(path)}")
    return value


def parse_time(value: Any, name: str = "timestamp") -> datetime | None:
    """ISO 8601 (``Z`` or offset) or unix seconds, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise MappingError(f"bad {name}: out of range") from exc
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise MappingError(f"bad {name}: {value[:40]!r}") from exc
    raise MappingError(f"bad {name}")


def _status(raw: Any, name: str) -> RunStatus:
    try:
        return normalize_status(str(raw))
    except ValueError as exc:
        raise MappingError(f"unknown {name} status {raw!r}") from exc


def _conclusion(raw: Any) -> Conclusion | None:
    if raw is None:
        return None
    try:
        return Conclusion(str(raw))
    except ValueError as exc:
        raise MappingError(f"unknown conclusion {raw!r}") from exc


def repository_name(payload: dict[str, Any]) -> str:
    name = _text(payload, "repository", "full_name", limit=200, required=True)
    assert name is not None
    return name


def parse_workflow_run(payload: dict[str, Any]) -> RunUpdate:
    run = _get(payload, "workflow_run")
    status = _status(_get(run, "status"), "run")
    conclusion = _conclusion(run.get("conclusion")) if status is RunStatus.COMPLETED else None
    updated_at = parse_time(run.get("updated_at"), "updated_at")
    started_at = parse_time(run.get("run_started_at"), "run_started_at") or parse_time(
        run.get("created_at"), "created_at"
    )
    workflow_name = _text(payload, "workflow", "name", limit=300) or _text(run, "name", limit=300)
    return RunUpdate(
        repository=repository_name(payload),
        run_id=_int(run, "id") or 0,
        run_attempt=_int(run, "run_attempt", required=False, bits=32) or 1,
        status=status,
        conclusion=conclusion,
        source_updated_at=updated_at,
        run_number=_int(run, "run_number", required=False, bits=32),
        workflow_name=workflow_name,
        name=_text(run, "display_title", limit=300)
        or _text(run, "name", limit=300)
        or workflow_name,
        event=_text(run, "event", limit=64),
        branch=_text(run, "head_branch", limit=255),
        head_sha=_text(run, "head_sha", limit=64),
        commit_message=_text(run, "head_commit", "message", limit=2000),
        actor=_text(run, "triggering_actor", "login", limit=100)
        or _text(run, "actor", "login", limit=100),
        html_url=_text(run, "html_url", limit=500),
        started_at=started_at if status is not RunStatus.QUEUED else None,
        completed_at=updated_at if status is RunStatus.COMPLETED else None,
        created_at=parse_time(run.get("created_at"), "created_at"),
    )


def parse_workflow_job(payload: dict[str, Any]) -> JobUpdate:
    job = _get(payload, "workflow_job")
    status = _status(_get(job, "status"), "job")
    steps = job.get("steps") or []
    completed_at = parse_time(job.get("completed_at"), "completed_at")
    started_at = parse_time(job.get("started_at"), "started_at")
    return JobUpdate(
        repository=repository_name(payload),
        run_id=_int(job, "run_id") or 0,
        job_id=_int(job, "id") or 0,
        run_attempt=_int(job, "run_attempt", required=False, bits=32) or 1,
        name=_text(job, "name", limit=300) or "job",
        status=status,
        conclusion=_conclusion(job.get("conclusion")) if status is RunStatus.COMPLETED else None,
        runner_name=_text(job, "runner_name", limit=200),
        steps_count=len(steps) if isinstance(steps, list) else 0,
        started_at=started_at if status is not RunStatus.QUEUED else None,
        completed_at=completed_at if status is RunStatus.COMPLETED else None,
        html_url=_text(job, "html_url", limit=500),
        head_sha=_text(job, "head_sha", limit=64),
        branch=_text(job, "head_branch", limit=255),
        workflow_name=_text(job, "workflow_name", limit=300),
        source_updated_at=completed_at or started_at or parse_time(job.get("created_at")),
    )


def parse_deployment(payload: dict[str, Any]) -> DeploymentUpdate:
    deployment = _get(payload, "deployment")
    created_at = parse_time(_get(deployment, "created_at"), "created_at")
    assert created_at is not None
    flag = deployment.get("production_environment")
    return DeploymentUpdate(
        repository=repository_name(payload),
        deployment_id=_int(deployment, "id") or 0,
        environment=_text(deployment, "environment", limit=100, required=True) or "",
        production_flag=flag if isinstance(flag, bool) else None,
        sha=_text(deployment, "sha", limit=64, required=True) or "",
        ref=_text(deployment, "ref", limit=255),
        creator=_text(deployment, "creator", "login", limit=100),
        created_at=created_at,
    )


DEPLOYMENT_STATES = frozenset(
    {"queued", "pending", "in_progress", "success", "failure", "error", "inactive"}
)


def parse_deployment_status(payload: dict[str, Any]) -> DeploymentStatusUpdate:
    status = _get(payload, "deployment_status")
    state = str(_get(status, "state"))
    if state not in DEPLOYMENT_STATES:
        raise MappingError(f"unknown deployment state {state!r}")
    occurred_at = parse_time(_get(status, "created_at"), "created_at")
    assert occurred_at is not None
    return DeploymentStatusUpdate(
        deployment=parse_deployment(payload),
        status_id=_int(status, "id") or 0,
        state="queued" if state == "pending" else state,
        occurred_at=occurred_at,
    )


ZERO_SHA = "0" * 40


def parse_push(payload: dict[str, Any]) -> PushUpdate:
    ref = _text(payload, "ref", limit=255, required=True) or ""
    pushed_at = parse_time(_get(payload, "repository", "pushed_at", required=False), "pushed_at")
    head_time = parse_time(_get(payload, "head_commit", "timestamp", required=False))
    commits: dict[str, PushedCommit] = {}
    raw_commits = payload.get("commits") or []
    if not isinstance(raw_commits, list):
        raise MappingError("commits is not a list")
    for raw in raw_commits:
        sha = _text(raw, "id", limit=64, required=True) or ""
        commits[sha] = PushedCommit(sha, parse_time(raw.get("timestamp")))
    after = _text(payload, "after", limit=64)
    if after and after != ZERO_SHA and after not in commits:
        commits[after] = PushedCommit(after, head_time)
    return PushUpdate(
        repository=repository_name(payload),
        ref=ref,
        pushed_at=pushed_at or head_time or datetime.now(UTC),
        commits=list(commits.values()),
    )


def parse_incident_issue(payload: dict[str, Any], label: str) -> IncidentUpdate | None:
    """The incident an ``issues`` event describes, or None when the issue lacks the label."""
    issue = _get(payload, "issue")
    labels = issue.get("labels") or []
    names = {str(item.get("name", "")).casefold() for item in labels if isinstance(item, dict)}
    if label.casefold() not in names:
        return None
    opened_at = parse_time(_get(issue, "created_at"), "created_at")
    assert opened_at is not None
    closed = issue.get("state") == "closed"
    return IncidentUpdate(
        repository=repository_name(payload),
        issue_number=_int(issue, "number") or 0,
        title=_text(issue, "title", limit=500) or "incident",
        opened_at=opened_at,
        resolved_at=parse_time(issue.get("closed_at"), "closed_at") if closed else None,
        source_updated_at=parse_time(issue.get("updated_at"), "updated_at"),
    )
