"""Deployments and incidents from systems that are not GitHub (GitHub's arrive by webhook)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, status
from sqlalchemy import select

from flightdeck_common.db import utcnow
from flightdeck_common.errors import Conflict, InvalidCursor, NotFound, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from flightdeck_common.params import IdPath
from flightdeck_common.repository import RepositoryBase
from flightdeck_pipeline.dependencies import (
    USER_AUTH_RESPONSES,
    CurrentUser,
    OperatorUser,
    ReadSessionDep,
    RuntimeDep,
    WriteSessionDep,
)
from flightdeck_pipeline.deployments.models import Deployment, Incident
from flightdeck_pipeline.deployments.repository import is_production
from flightdeck_pipeline.deployments.schemas import (
    DEPLOYMENT_EXAMPLES,
    INCIDENT_EXAMPLES,
    INCIDENT_RESOLVE_EXAMPLES,
    DeploymentCreate,
    DeploymentRead,
    DeploymentState,
    IncidentCreate,
    IncidentRead,
    IncidentResolve,
)
from flightdeck_pipeline.metrics.cache import DEPLOYMENTS
from flightdeck_pipeline.outbox import audit

router = APIRouter(prefix="/pipelines", tags=["deployments"], responses=USER_AUTH_RESPONSES)


class IncidentNotFound(NotFound):
    code = "incident_not_found"
    title = "Incident not found"


class IncidentAlreadyResolved(Conflict):
    code = "incident_already_resolved"
    title = "The incident is already resolved"


class _Deployments(RepositoryBase[Deployment]):
    model = Deployment


class _Incidents(RepositoryBase[Incident]):
    model = Incident


@router.get(
    "/deployments",
    response_model=Page[DeploymentRead],
    summary="List deployments",
    responses=problem_responses(InvalidCursor),
)
async def list_deployments(
    user: CurrentUser,
    session: ReadSessionDep,
    repository: Annotated[str | None, Query(max_length=200)] = None,
    environment: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[DeploymentRead]:
    """List deployments, newest first."""
    statement = select(Deployment)
    if repository is not None:
        statement = statement.where(Deployment.repository == repository)
    if environment is not None:
        statement = statement.where(Deployment.environment == environment)
    rows, next_cursor = await _Deployments(session).paginate(
        statement, order_by=[Deployment.created_at, Deployment.id], limit=limit, cursor=cursor
    )
    return Page[DeploymentRead](
        items=[DeploymentRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/deployments",
    response_model=DeploymentRead,
    status_code=status.HTTP_201_CREATED,
    summary="Record a deployment",
)
async def create_deployment(
    body: Annotated[DeploymentCreate, Body(openapi_examples=DEPLOYMENT_EXAMPLES)],
    user: OperatorUser,
    session: WriteSessionDep,
    rt: RuntimeDep,
) -> DeploymentRead:
    """Record a deployment made outside GitHub."""
    at = body.deployed_at or utcnow()
    production = is_production(
        body.environment, body.production, rt.settings.production_environments
    )
    deployment = Deployment(
        repository=body.repository,
        deployment_id=None,
        environment=body.environment,
        production=production,
        sha=body.sha.lower(),
        ref=body.ref,
        creator=user.username,
        status=body.status.value,
        status_updated_at=at,
        deployed_at=at,
        succeeded_at=at if body.status is DeploymentState.SUCCESS else None,
        failed_at=at if body.status in (DeploymentState.FAILURE, DeploymentState.ERROR) else None,
        source="manual",
    )
    session.add(deployment)
    await session.flush()
    if deployment.succeeded_at is not None:
        await rt.deployment_succeeded(session, deployment.repository, deployment.succeeded_at)
    await audit(
        session,
        "deployment.recorded",
        actor=user.username,
        subject=f"{body.repository}@{body.environment}",
        sha=deployment.sha,
        status=body.status.value,
    )
    await rt.record_change(session, "deployment.updated", deployment.id)
    rt.mark_stale(session, DEPLOYMENTS)
    return DeploymentRead.model_validate(deployment)


@router.get(
    "/incidents",
    response_model=Page[IncidentRead],
    summary="List incidents",
    responses=problem_responses(InvalidCursor),
)
async def list_incidents(
    user: CurrentUser,
    session: ReadSessionDep,
    repository: Annotated[str | None, Query(max_length=200)] = None,
    open_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[IncidentRead]:
    """List incidents, newest first."""
    statement = select(Incident)
    if repository is not None:
        statement = statement.where(Incident.repository == repository)
    if open_only:
        statement = statement.where(Incident.resolved_at.is_(None))
    rows, next_cursor = await _Incidents(session).paginate(
        statement, order_by=[Incident.opened_at, Incident.id], limit=limit, cursor=cursor
    )
    return Page[IncidentRead](
        items=[IncidentRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/incidents",
    response_model=IncidentRead,
    status_code=status.HTTP_201_CREATED,
    summary="Open an incident",
)
async def create_incident(
    body: Annotated[IncidentCreate, Body(openapi_examples=INCIDENT_EXAMPLES)],
    user: OperatorUser,
    session: WriteSessionDep,
    rt: RuntimeDep,
) -> IncidentRead:
    """Open an incident; it is attributed to the latest production deployment before it."""
    incident = Incident(
        repository=body.repository,
        issue_number=None,
        title=body.title,
        opened_at=body.opened_at or utcnow(),
        source="manual",
    )
    session.add(incident)
    await session.flush()
    await rt.attribute_incident(session, incident.id)
    await audit(
        session, "incident.opened", actor=user.username, subject=str(incident.id), title=body.title
    )
    rt.mark_stale(session, DEPLOYMENTS)
    await session.refresh(incident)
    return IncidentRead.model_validate(incident)


@router.post(
    "/incidents/{incident_pk}/resolve",
    response_model=IncidentRead,
    summary="Resolve an incident",
    # Conflict: a resolution time before the incident opened.
    responses=problem_responses(IncidentNotFound, IncidentAlreadyResolved, Conflict),
)
async def resolve_incident(
    incident_pk: IdPath,
    body: Annotated[IncidentResolve, Body(openapi_examples=INCIDENT_RESOLVE_EXAMPLES)],
    user: OperatorUser,
    session: WriteSessionDep,
    rt: RuntimeDep,
) -> IncidentRead:
    """Mark an incident resolved (recovery time ends here)."""
    incident = await session.get(Incident, incident_pk)
    if incident is None:
        raise IncidentNotFound()
    if incident.resolved_at is not None:
        raise IncidentAlreadyResolved()
    resolved_at = body.resolved_at or utcnow()
    if resolved_at < incident.opened_at:
        raise Conflict("An incident cannot be resolved before it opened.")
    incident.resolved_at = resolved_at
    await audit(session, "incident.resolved", actor=user.username, subject=str(incident.id))
    rt.mark_stale(session, DEPLOYMENTS)
    return IncidentRead.model_validate(incident)
