"""Mapping a stored delivery: its payload read into the domains' update records (pure,
:func:`read_delivery`), then applied to runs, jobs, deployments, changes and incidents
(:func:`apply_delivery`) in the mapping worker's transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_pipeline.deployments.repository import DeploymentRepository
from flightdeck_pipeline.deployments.updates import (
    DeploymentStatusUpdate,
    DeploymentUpdate,
    IncidentUpdate,
    PushUpdate,
)
from flightdeck_pipeline.metrics.cache import DEPLOYMENTS, RUNS
from flightdeck_pipeline.runs.repository import RunRepository
from flightdeck_pipeline.runs.status import display_status
from flightdeck_pipeline.runs.updates import JobUpdate, RunUpdate
from flightdeck_pipeline.runtime import PipelineRuntime
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks import github
from flightdeck_pipeline.webhooks.metrics import RUN_UPDATES

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
INCIDENT_ACTIONS = frozenset({"opened", "closed", "reopened", "labeled", "edited"})

# What reading a payload raises when the payload is not what the adapter understands:
# reading is a function of the payload alone, so any of these is the payload's fault.
PAYLOAD_ERRORS: tuple[type[Exception], ...] = (
    github.MappingError,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
    RecursionError,
)


@dataclass(frozen=True)
class ReadDelivery:
    """A delivery's payload as the update it describes (None: nothing to map)."""

    event: str
    action: str | None
    update: Any | None

    def lock_key(self) -> tuple[int, str, int]:
        """Where applying it takes its row locks: a batch applies in this order, so two
        workers' batches never wait on each other's rows in a cycle."""
        update = self.update
        if isinstance(update, RunUpdate | JobUpdate):
            return (0, update.repository, update.run_id)
        if isinstance(update, DeploymentStatusUpdate):
            return (1, update.deployment.repository, update.deployment.deployment_id)
        if isinstance(update, DeploymentUpdate):
            return (1, update.repository, update.deployment_id)
        if isinstance(update, PushUpdate):
            return (2, update.repository, 0)
        if isinstance(update, IncidentUpdate):
            return (3, update.repository, update.issue_number)
        return (4, "", 0)


def read_delivery(event: str, body: bytes, settings: Settings) -> ReadDelivery:
    """The update a stored delivery describes; raises one of :data:`PAYLOAD_ERRORS`."""
    payload: dict[str, Any] = json.loads(body)
    if not isinstance(payload, dict):
        raise github.MappingError("the payload is not a JSON object")
    raw_action = payload.get("action")
    action = str(raw_action)[:64] if raw_action is not None else None
    update: Any | None = None
    if event == "workflow_run":
        update = github.parse_workflow_run(payload)
    elif event == "workflow_job":
        update = github.parse_workflow_job(payload)
    elif event == "deployment":
        update = github.parse_deployment(payload)
    elif event == "deployment_status":
        update = github.parse_deployment_status(payload)
    elif event == "push":
        update = github.parse_push(payload)
    elif event == "issues":
        incident = github.parse_incident_issue(payload, settings.incident_label)
        update = incident if incident is not None and action in INCIDENT_ACTIONS else None
    return ReadDelivery(event, action, update)


async def apply_delivery(
    session: AsyncSession, runtime: PipelineRuntime, delivery_id: str, read: ReadDelivery
) -> str:
    """Apply one read delivery in ``session``'s transaction: ``processed`` or ``ignored``
    (what it writes is marked stale for the metrics cache: ``commit_work.py``).

    Upserts make applying it again (a reprocessing, a racing replica) harmless: a run never
    moves back from a final state, and its log line is written once per delivery.
    """
    update = read.update
    if update is None:
        return "ignored"
    runtime.mark_stale(session, *EVENT_SCOPES[read.event])
    runs = RunRepository(session)
    deployments = DeploymentRepository(session)
    action = read.action
    if isinstance(update, RunUpdate):
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
        await runtime.record_change(session, "run.updated", run_pk, run)
    elif isinstance(update, JobUpdate):
        run_pk = await runs.ensure_placeholder(update)
        await runs.upsert_job(run_pk, update)
        await runs.add_log_line(
            run_pk,
            _level(update.conclusion.value if update.conclusion else None),
            f"job {update.name}: {action or update.status.value}"
            + (f" ({update.conclusion.value})" if update.conclusion else "")
            + (f" on {update.runner_name}" if update.runner_name else ""),
            delivery_id=delivery_id,
            logged_at=update.source_updated_at,
        )
        await runtime.record_change(session, "run.updated", run_pk)
    elif isinstance(update, DeploymentStatusUpdate):
        production = runtime.settings.production_environments
        pk = await deployments.upsert(update.deployment, production_environments=production)
        await deployments.add_status(pk, update)
        if update.state == "success":
            await runtime.deployment_succeeded(
                session, update.deployment.repository, update.occurred_at
            )
        await runtime.record_change(session, "deployment.updated", pk)
    elif isinstance(update, DeploymentUpdate):
        production = runtime.settings.production_environments
        pk = await deployments.upsert(update, production_environments=production)
        await runtime.record_change(session, "deployment.updated", pk)
    elif isinstance(update, PushUpdate):
        await deployments.add_changes(update)
    elif isinstance(update, IncidentUpdate):
        pk = await deployments.upsert_incident(update)
        await runtime.attribute_incident(session, pk)
    else:  # pragma: no cover - read_delivery makes only the types above
        raise TypeError(f"no mapping for {type(update).__name__}")
    return "processed"


def _level(conclusion: str | None) -> str:
    if conclusion in ("success", "neutral"):
        return "success"
    if conclusion in ("failure", "timed_out", "action_required"):
        return "error"
    if conclusion in ("cancelled", "skipped", "stale"):
        return "warning"
    return "info"
