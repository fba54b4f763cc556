"""Mapping a stored delivery into runs, jobs, deployments, changes and incidents."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.errors import JsonTooDeep
from flightdeck_common.json_depth import json_depth_exceeds
from flightdeck_pipeline.deployments.repository import DeploymentRepository
from flightdeck_pipeline.metrics.cache import DEPLOYMENTS, RUNS
from flightdeck_pipeline.runs.repository import RunRepository
from flightdeck_pipeline.runs.status import display_status
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks import github
from flightdeck_pipeline.webhooks.metrics import RUN_UPDATES

logger = logging.getLogger(__name__)

# What each mapped event writes: the metrics cache scopes it makes stale.
EVENT_SCOPES = {
    "workflow_run": (RUNS,),
    "workflow_job": (RUNS,),
    "deployment": (DEPLOYMENTS,),
    "deployment_status": (DEPLOYMENTS,),
    "push": (DEPLOYMENTS,),  # commits
    "issues": (DEPLOYMENTS,),  # incidents
}
MAPPED_EVENTS = frozenset(EVENT_SCOPES)


class ChangeRecorder(Protocol):
    """Records a change event for the live stream in this transaction (``current``: the
    run's row as just written, which spares reading it again)."""

    def __call__(
        self, session: AsyncSession, kind: str, pk: int, current: Any = None
    ) -> Awaitable[None]: ...


# (session, incident pk) -> attributes the incident to a deployment.
IncidentAttributor = Callable[[AsyncSession, int], Awaitable[None]]
# (session, repository, succeeded_at) -> re-attributes incidents a late success precedes.
DeploymentSucceeded = Callable[[AsyncSession, str, datetime], Awaitable[None]]


async def _noop_change(session: AsyncSession, kind: str, pk: int, current: Any = None) -> None:
    return None


async def map_delivery(
    session: AsyncSession,
    settings: Settings,
    *,
    event: str,
    delivery_id: str,
    payload: dict[str, Any],
    record_change: ChangeRecorder = _noop_change,
    attribute_incident: IncidentAttributor | None = None,
    deployment_succeeded: DeploymentSucceeded | None = None,
) -> str:
    """Apply one delivery; returns ``processed`` or ``ignored``. Raises MappingError."""
    runs = RunRepository(session)
    deployments = DeploymentRepository(session)
    action = payload.get("action")
    if event == "workflow_run":
        update = github.parse_workflow_run(payload)
        run = await runs.upsert_row(update)
        run_pk = int(run.id)
        RUN_UPDATES.labels(display_status(update.status, update.conclusion).value).inc()
        summary = f"workflow run {update.name or update.run_id} #{update.run_number or '?'}"
        await runs.add_log_line(
            run_pk,
            _level(update.conclusion.value if update.conclusion else None),
            f"{summary}: {action or update.status.value}"
            + (f" ({update.conclusion.value})" if update.conclusion else ""),
            delivery_id=delivery_id,
            logged_at=update.source_updated_at,
        )
        await record_change(session, "run.updated", run_pk, run)
        return "processed"
    if event == "workflow_job":
        job = github.parse_workflow_job(payload)
        run_pk = await runs.ensure_placeholder(job)
        await runs.upsert_job(run_pk, job)
        await runs.add_log_line(
            run_pk,
            _level(job.conclusion.value if job.conclusion else None),
            f"job {job.name}: {action or job.status.value}"
            + (f" ({job.conclusion.value})" if job.conclusion else "")
            + (f" on {job.runner_name}" if job.runner_name else ""),
            delivery_id=delivery_id,
            logged_at=job.source_updated_at,
        )
        await record_change(session, "run.updated", run_pk)
        return "processed"
    if event == "deployment":
        deployment = github.parse_deployment(payload)
        pk = await deployments.upsert(
            deployment, production_environments=settings.production_environments
        )
        await record_change(session, "deployment.updated", pk)
        return "processed"
    if event == "deployment_status":
        status = github.parse_deployment_status(payload)
        pk = await deployments.upsert(
            status.deployment, production_environments=settings.production_environments
        )
        await deployments.add_status(pk, status)
        if status.state == "success" and deployment_succeeded is not None:
            await deployment_succeeded(session, status.deployment.repository, status.occurred_at)
        await record_change(session, "deployment.updated", pk)
        return "processed"
    if event == "push":
        await deployments.add_changes(github.parse_push(payload))
        return "processed"
    if event == "issues":
        incident = github.parse_incident_issue(payload, settings.incident_label)
        if incident is None or action not in ("opened", "closed", "reopened", "labeled", "edited"):
            return "ignored"
        pk = await deployments.upsert_incident(incident)
        if attribute_incident is not None:
            await attribute_incident(session, pk)
        return "processed"
    return "ignored"


def _level(conclusion: str | None) -> str:
    if conclusion in ("success", "neutral"):
        return "success"
    if conclusion in ("failure", "timed_out", "action_required"):
        return "error"
    if conclusion in ("cancelled", "skipped", "stale"):
        return "warning"
    return "info"


def parse_body(body: bytes, max_depth: int) -> dict[str, Any]:
    """The JSON object of a delivery: JsonTooDeep when it nests deeper than ``max_depth``,
    ValueError when it is not a JSON object."""
    if json_depth_exceeds(body, max_depth):
        raise JsonTooDeep(f"The payload nests arrays and objects deeper than {max_depth}.")
    try:
        payload = json.loads(body)
    except RecursionError as exc:  # not reached after the depth check; never a 500
        raise ValueError("the payload is nested too deeply") from exc
    if not isinstance(payload, dict):
        raise ValueError("the payload is not a JSON object")
    return payload
