"""What the live stream says about a changed run or deployment."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_pipeline.deployments.models import Deployment
from flightdeck_pipeline.deployments.schemas import DeploymentRead
from flightdeck_pipeline.events.publish import record_change
from flightdeck_pipeline.runs.models import Run
from flightdeck_pipeline.runs.schemas import RunRead


async def entity_payload(session: AsyncSession, kind: str, pk: int) -> dict[str, Any] | None:
    """The current state of the run or deployment ``pk`` as JSON-ready data."""
    if kind.startswith("run."):
        run = await session.get(Run, pk, populate_existing=True)
        return RunRead.model_validate(run).model_dump(mode="json") if run else None
    deployment = await session.get(Deployment, pk, populate_existing=True)
    return DeploymentRead.model_validate(deployment).model_dump(mode="json") if deployment else None


async def record_entity_change(session: AsyncSession, bus: Any, kind: str, pk: int) -> None:
    """Record the change event in the writer's transaction (the stream reads it after commit)."""
    payload = await entity_payload(session, kind, pk)
    if payload is not None:
        await record_change(session, bus, kind, payload)
