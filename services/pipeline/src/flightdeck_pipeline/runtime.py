"""The pipeline service's long-lived collaborators, made in the lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_pipeline import commit_work
from flightdeck_pipeline.change_payloads import record_entity_change
from flightdeck_pipeline.deployments.models import Incident
from flightdeck_pipeline.metrics.cache import SCOPES
from flightdeck_pipeline.metrics.dora import attribute_incident, reattribute_incidents
from flightdeck_pipeline.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class PipelineRuntime:
    """What write paths need besides the session: the live-event bus (change events are
    recorded in the writer's transaction) and the metrics cache (dropped after writes)."""

    settings: Settings
    change_bus: Any | None = None
    metrics_cache: Any | None = None

    async def record_change(
        self, session: AsyncSession, kind: str, pk: int, current: Any = None
    ) -> None:
        """Record a ``run.updated``/``deployment.updated`` event for the live stream
        (``current``: the run's row as just written, when the caller has it)."""
        await record_entity_change(session, self.change_bus, kind, pk, current)

    async def attribute_incident(self, session: AsyncSession, incident_pk: int) -> None:
        incident = await session.get(Incident, incident_pk)
        if incident is not None:
            await attribute_incident(
                session, incident, production_environments=self.settings.production_environments
            )

    async def deployment_succeeded(
        self, session: AsyncSession, repository: str, succeeded_at: datetime
    ) -> None:
        """A success can arrive after incidents it precedes: attribute them again."""
        await reattribute_incidents(
            session,
            repository=repository,
            since=succeeded_at,
            production_environments=self.settings.production_environments,
        )

    @staticmethod
    def mark_stale(session: AsyncSession, *scopes: str) -> None:
        """Note that this transaction writes ``scopes`` (none named: all): once it
        committed, its writer (``WriteSessionDep``, the mapping worker) awaits
        :meth:`after_write` for them before answering, so the next read sees the write
        (``commit_work.py``, stage 3)."""
        commit_work.mark_stale(session, *scopes)

    @staticmethod
    def stale_scopes(session: AsyncSession) -> list[str]:
        """The scopes :meth:`mark_stale` noted on ``session``, sorted."""
        return commit_work.stale_scopes(session, SCOPES)

    async def after_write(self, *scopes: str) -> None:
        """Called after a committed write to ``scopes`` (``metrics.cache.RUNS``,
        ``DEPLOYMENTS``; none named: all): the cached aggregates that read them are stale."""
        if self.metrics_cache is not None:
            try:
                await self.metrics_cache.invalidate(*scopes)
            except Exception:
                logger.exception("could not invalidate the metrics cache")


def get_runtime(request: Request) -> PipelineRuntime:
    runtime: PipelineRuntime = request.app.state.pipeline_runtime
    return runtime
