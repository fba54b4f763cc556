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


async def record_entity_change(
    session: AsyncSession, bus: Any, kind: str, pk: int, current: Any = None
) -> None:
    """Record the change event in the writer's transaction (the stream reads it after commit).

    ``current``: the run's row as this transaction just wrote or read it (every column of
    ``runs``, e.g. from ``RETURNING``), which spares reading it again; else it is loaded.
    """
    if current is not None and kind.startswith("run."):
        payload: dict[str, Any] | None = RunRead.model_validate(current).model_dump(mode="json")
    else:
        payload = await entity_payload(session, kind, pk)
    if payload is not None:
        await record_change(session, bus, kind, payload)
