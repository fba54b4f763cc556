"""Service accounts: OAuth2 client credentials, and their administration by admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, status

from flightdeck_auth.dependencies import ClientIp, SessionDep, current_user_row
from flightdeck_auth.exceptions import (
    InvalidClient,
    InvalidScope,
    ServiceAccountExists,
    ServiceAccountNotFound,
    UnsupportedGrantType,
)
from flightdeck_auth.runtime import RuntimeDep
from flightdeck_auth.security.step_up import STEP_UP_ERRORS
from flightdeck_auth.service_accounts import service
from flightdeck_auth.service_accounts.models import ServiceAccount
from flightdeck_auth.service_accounts.schemas import (
    ServiceAccountCreate,
    ServiceAccountCreated,
    ServiceAccountRead,
)
from flightdeck_auth.service_accounts.service import ServiceAccountRepository, issue_service_token
from flightdeck_auth.tokens.schemas import ServiceToken
from flightdeck_common.auth.dependencies import AdminUser
from flightdeck_common.errors import InvalidCursor, RateLimited, Unauthorized, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from flightdeck_common.rate_limit import rate_limit

router = APIRouter(prefix="/auth", tags=["service accounts"])


@router.post(
    "/service-token",
    response_model=ServiceToken,
    summary="Issue a service token (OAuth2 client credentials)",
    dependencies=[Depends(rate_limit("service_token"))],
    responses=problem_responses(InvalidClient, InvalidScope, UnsupportedGrantType, RateLimited),
)
async def create_service_token(
    grant_type: Annotated[str, Form(max_length=64)],
    client_id: Annotated[str, Form(min_length=1, max_length=64)],
    client_secret: Annotated[str, Form(min_length=1, max_length=256)],
    session: SessionDep,
    rt: RuntimeDep,
    ip: ClientIp,
    scope: Annotated[str | None, Form(max_length=500)] = None,
) -> ServiceToken:
    """Issue a short-lived service token (OAuth2 client_credentials grant)."""
    if grant_type != "client_credentials":
        raise UnsupportedGrantType()
    return await issue_service_token(session, rt, client_id, client_secret, scope, ip)


def _read(account: ServiceAccount) -> ServiceAccountRead:
    return ServiceAccountRead(
        client_id=account.client_id,
        audiences=account.audiences.split(),
        description=account.description,
        is_active=account.is_active,
        created_at=account.created_at,
        updated_at=account.updated_at,
    )


@router.post(
    "/service-accounts",
    response_model=ServiceAccountCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create a service account (admins)",
    dependencies=[Depends(rate_limit("default"))],
    responses=problem_responses(ServiceAccountExists, Unauthorized, RateLimited, *STEP_UP_ERRORS),
)
async def create_service_account(
    body: ServiceAccountCreate,
    admin: AdminUser,
    session: SessionDep,
    rt: RuntimeDep,
    ip: ClientIp,
) -> ServiceAccountCreated:
    """Create a service account for the given internal audiences (step-up: the admin's
    current password and a TOTP code). The answer holds the client secret, shown this
    once; exchange it at `POST /auth/service-token`. Audited as
    `auth.service_account.created`."""
    account, secret = await service.create_service_account(
        session,
        rt,
        body.client_id,
        list(body.audiences),
        description=body.description,
        actor=admin.actor_name,
        step_up=(await current_user_row(admin, session), body, ip),
    )
    return ServiceAccountCreated(**_read(account).model_dump(), client_secret=secret)


@router.get(
    "/service-accounts",
    response_model=Page[ServiceAccountRead],
    summary="List service accounts (admins)",
    dependencies=[Depends(rate_limit("default"))],
    responses=problem_responses(InvalidCursor, RateLimited),
)
async def list_service_accounts(
    admin: AdminUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[ServiceAccountRead]:
    """Service accounts in creation order, active and deactivated; never their secrets."""
    rows, next_cursor = await ServiceAccountRepository(session).page(limit=limit, cursor=cursor)
    return Page[ServiceAccountRead](items=[_read(a) for a in rows], next_cursor=next_cursor)


@router.delete(
    "/service-accounts/{client_id}",
    response_model=ServiceAccountRead,
    summary="Deactivate a service account (admins)",
    dependencies=[Depends(rate_limit("default"))],
    responses=problem_responses(ServiceAccountNotFound, RateLimited),
)
async def deactivate_service_account(
    client_id: Annotated[str, Path(max_length=64)], admin: AdminUser, session: SessionDep
) -> ServiceAccountRead:
    """Refuse new service tokens to this account from now on (idempotent). Tokens it
    already holds stay valid until they expire (minutes). Audited as
    `auth.service_account.deactivated`."""
    account = await service.deactivate_service_account(session, client_id, actor=admin.actor_name)
    return _read(account)
