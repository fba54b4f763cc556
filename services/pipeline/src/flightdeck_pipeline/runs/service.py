"""Rules of the manual run API (other CI systems): same upsert rules as webhooks."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.auth.claims import TokenClaims
from flightdeck_common.db import utcnow
from flightdeck_pipeline.outbox import audit
from flightdeck_pipeline.runs.exceptions import IllegalTransition, RunNotFound
from flightdeck_pipeline.runs.models import Run
from flightdeck_pipeline.runs.repository import RunRepository
from flightdeck_pipeline.runs.schemas import RunStatusChange, RunUpsert
from flightdeck_pipeline.runs.status import STATUS_RANK, Conclusion, RunStatus
from flightdeck_pipeline.runs.updates import RunUpdate
from flightdeck_pipeline.runtime import PipelineRuntime


async def upsert_manual_run(
    session: AsyncSession, rt: PipelineRuntime, body: RunUpsert, user: TokenClaims
) -> tuple[Run, bool]:
    """Create or update by (repository, run_id); returns (run, created)."""
    runs = RunRepository(session)
    existed = await session.scalar(
        select(Run.id).where(Run.repository == body.repository, Run.run_id == body.run_id)
    )
    now = utcnow()
    completed_at = body.completed_at or (now if body.status is RunStatus.COMPLETED else None)
    pk = await runs.upsert(
        RunUpdate(
            repository=body.repository,
            run_id=body.run_id,
            run_attempt=body.run_attempt,
            status=body.status,
            conclusion=body.conclusion,
            source_updated_at=now,
            run_number=body.run_number,
            workflow_name=body.workflow_name,
            name=body.name,
            event=body.event,
            branch=body.branch,
            head_sha=body.head_sha,
            commit_message=body.commit_message,
            actor=body.actor or user.username,
            html_url=body.html_url,
            started_at=body.started_at or (now if body.status is not RunStatus.QUEUED else None),
            completed_at=completed_at,
        ),
        source="manual",
    )
    await runs.add_log_line(pk, "info", f"run reported by {user.username}: {body.status.value}")
    await audit(
        session,
        "run.upserted",
        actor=user.username,
        subject=f"{body.repository}#{body.run_id}",
        status=body.status.value,
        conclusion=body.conclusion.value if body.conclusion else None,
    )
    await rt.record_change(session, "run.updated", pk)
    run = await session.get(Run, pk, populate_existing=True)
    assert run is not None
    return run, existed is None


async def change_status(
    session: AsyncSession, rt: PipelineRuntime, run: Run, change: RunStatusChange, user: TokenClaims
) -> Run:
    """Move a run forward: queued -> in_progress -> completed (with a conclusion)."""
    current = RunStatus(run.status)
    if current is RunStatus.COMPLETED:
        raise IllegalTransition("A completed run does not change any more.")
    if STATUS_RANK[change.status] <= STATUS_RANK[current]:
        raise IllegalTransition(f"{current.value} -> {change.status.value} goes backwards.")
    if change.status is RunStatus.COMPLETED and change.conclusion is None:
        raise IllegalTransition("Completing a run needs a conclusion.")
    if change.status is not RunStatus.COMPLETED and change.conclusion is not None:
        raise IllegalTransition("Only a completed run has a conclusion.")
    body = RunUpsert(
        repository=run.repository,
        run_id=run.run_id,
        run_attempt=run.run_attempt,
        status=change.status,
        conclusion=Conclusion(change.conclusion) if change.conclusion else None,
        started_at=run.started_at,
    )
    updated, _ = await upsert_manual_run(session, rt, body, user)
    return updated


async def get_run(session: AsyncSession, run_pk: int) -> Run:
    run = await session.get(Run, run_pk)
    if run is None:
        raise RunNotFound()
    return run
