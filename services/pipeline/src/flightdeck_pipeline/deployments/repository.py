"""SQL for deployments, their statuses, pushed commits and incidents (upserts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, or_, select, update

from flightdeck_common.db import utcnow
from flightdeck_common.upsert import insert_for
from flightdeck_pipeline.deployments.models import Change, Deployment, DeploymentStatus, Incident
from flightdeck_pipeline.deployments.updates import (
    DeploymentStatusUpdate,
    DeploymentUpdate,
    IncidentUpdate,
    PushUpdate,
)

SUCCESS_STATES = frozenset({"success"})
FAILURE_STATES = frozenset({"failure", "error"})


def is_production(environment: str, flag: bool | None, production_environments: list[str]) -> bool:
    """The sender's explicit flag when it gave one, else the configured environment names
    (case-insensitive)."""
    if flag is not None:
        return flag
    return environment.casefold() in {name.casefold() for name in production_environments}


class DeploymentRepository:
    def __init__(self, session: Any) -> None:
        self.session = session

    async def upsert(
        self,
        update: DeploymentUpdate,
        *,
        production_environments: list[str],
        source: str = "github",
    ) -> int:
        """Insert the deployment (status ``queued``) unless it exists; returns its key."""
        production = is_production(
            update.environment, update.production_flag, production_environments
        )
        now = utcnow()
        insert = insert_for(self.session, Deployment.__table__).values(
            repository=update.repository,
            deployment_id=update.deployment_id,
            environment=update.environment,
            production=production,
            sha=update.sha,
            ref=update.ref,
            creator=update.creator,
            status="queued",
            deployed_at=update.created_at,
            source=source,
            created_at=now,
            updated_at=now,
        )
        await self.session.execute(
            insert.on_conflict_do_nothing(index_elements=["repository", "deployment_id"])
        )
        pk = await self.session.scalar(
            select(Deployment.id).where(
                Deployment.repository == update.repository,
                Deployment.deployment_id == update.deployment_id,
            )
        )
        assert pk is not None
        return int(pk)

    async def add_status(self, deployment_pk: int, update: DeploymentStatusUpdate) -> None:
        """Record a status (once per status id) and move the deployment's latest state
        forward only when this status is not older than the stored one."""
        insert = insert_for(self.session, DeploymentStatus.__table__).values(
            deployment_pk=deployment_pk,
            status_id=update.status_id,
            state=update.state,
            occurred_at=update.occurred_at,
        )
        await self.session.execute(
            insert.on_conflict_do_nothing(index_elements=["deployment_pk", "status_id"])
        )
        table = Deployment.__table__
        at = update.occurred_at
        values: dict[str, Any] = {"updated_at": utcnow()}
        newer = (table.c.status_updated_at.is_(None)) | (table.c.status_updated_at <= at)
        values["status"] = case((newer, update.state), else_=table.c.status)
        values["status_updated_at"] = case((newer, at), else_=table.c.status_updated_at)
        if update.state in SUCCESS_STATES:
            values["succeeded_at"] = case(
                (table.c.succeeded_at.is_(None) | (table.c.succeeded_at > at), at),
                else_=table.c.succeeded_at,
            )
        if update.state in FAILURE_STATES:
            values["failed_at"] = case(
                (table.c.failed_at.is_(None) | (table.c.failed_at > at), at),
                else_=table.c.failed_at,
            )
        await self.session.execute(update_deployment(deployment_pk, values))

    async def add_changes(self, push: PushUpdate) -> int:
        """Remember pushed commits (first push wins); returns how many were new."""
        if not push.commits:
            return 0
        rows = [
            {
                "repository": push.repository,
                "sha": commit.sha,
                "ref": push.ref,
                "committed_at": commit.committed_at,
                "authored_at": commit.committed_at,
                "pushed_at": push.pushed_at,
            }
            for commit in push.commits
        ]
        insert = insert_for(self.session, Change.__table__).values(rows)
        result = await self.session.execute(
            insert.on_conflict_do_nothing(index_elements=["repository", "sha"])
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def upsert_incident(self, update: IncidentUpdate, *, source: str = "github") -> int:
        now = utcnow()
        table = Incident.__table__
        insert = insert_for(self.session, table).values(
            repository=update.repository,
            issue_number=update.issue_number,
            title=update.title,
            opened_at=update.opened_at,
            resolved_at=update.resolved_at,
            source_updated_at=update.source_updated_at,
            source=source,
            created_at=now,
            updated_at=now,
        )
        excluded = insert.excluded
        stored = table.c.source_updated_at
        # Ordered by the issue's updated_at, as runs are: an older update (a late or
        # replayed "opened") never reopens or renames what a newer one wrote.
        not_older = or_(
            stored.is_(None),
            and_(
                excluded.source_updated_at.is_not(None),
                excluded.source_updated_at >= stored,
            ),
        )
        statement = insert.on_conflict_do_update(
            index_elements=["repository", "issue_number"],
            set_={
                "title": excluded.title,
                "resolved_at": excluded.resolved_at,
                "source_updated_at": excluded.source_updated_at,
                "updated_at": excluded.updated_at,
            },
            where=not_older,
        )
        await self.session.execute(statement)
        pk = await self.session.scalar(
            select(Incident.id).where(
                Incident.repository == update.repository,
                Incident.issue_number == update.issue_number,
            )
        )
        assert pk is not None
        return int(pk)


def update_deployment(deployment_pk: int, values: dict[str, Any]) -> Any:
    return update(Deployment).where(Deployment.id == deployment_pk).values(**values)
