"""User administration through auth's internal API (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query

from flightdeck_admin.auth_api import AuthApiDep, AuthRejected
from flightdeck_admin.users import service
from flightdeck_admin.users.schemas import USER_UPDATE_EXAMPLES, UserRead, UserUpdate
from flightdeck_common.auth.claims import Role
from flightdeck_common.auth.dependencies import AdminUser, bearer_token
from flightdeck_common.auth.errors import (
    AuthUnavailable,
    InsufficientRole,
    InvalidToken,
    MfaEnrolmentRequired,
    TokenRevoked,
)
from flightdeck_common.dependencies import ClientIp, SessionDep
from flightdeck_common.errors import InvalidCursor, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from flightdeck_common.params import IdPath
from flightdeck_common.user_errors import ActingAdminRequired, LastAdmin, UserNotFound

router = APIRouter(prefix="/admin", tags=["users"])

# Authentication's problems, and any refusal of auth's internal API passed on as is.
_AUTH_ERRORS = (
    InvalidToken,
    TokenRevoked,
    InsufficientRole,
    MfaEnrolmentRequired,
    AuthUnavailable,
    AuthRejected,
)


@router.get(
    "/users",
    response_model=Page[UserRead],
    summary="List users",
    responses=problem_responses(*_AUTH_ERRORS, InvalidCursor),
)
async def list_users(
    admin: AdminUser,
    api: AuthApiDep,
    role: Role | None = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(max_length=80, description="Username contains.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[UserRead]:
    """List user accounts, oldest first (filters: role, is_active, q)."""
    page = await api.list_users(role=role, is_active=is_active, q=q, limit=limit, cursor=cursor)
    return Page[UserRead](
        items=[UserRead.model_validate(u.model_dump()) for u in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/users/{user_id}",
    response_model=UserRead,
    summary="Read a user",
    responses=problem_responses(*_AUTH_ERRORS, UserNotFound),
)
async def read_user(user_id: IdPath, admin: AdminUser, api: AuthApiDep) -> UserRead:
    """One user account."""
    return UserRead.model_validate((await api.get_user(user_id)).model_dump())


@router.patch(
    "/users/{user_id}",
    response_model=UserRead,
    summary="Change a user's role or active flag",
    responses=problem_responses(*_AUTH_ERRORS, UserNotFound, LastAdmin, ActingAdminRequired),
)
async def update_user(
    user_id: IdPath,
    body: Annotated[UserUpdate, Body(openapi_examples=USER_UPDATE_EXAMPLES)],
    admin: AdminUser,
    admin_token: Annotated[str, Depends(bearer_token)],
    api: AuthApiDep,
    session: SessionDep,
    ip: ClientIp,
) -> UserRead:
    """Change a user's role and/or active flag (deactivation ends their sessions).
    Granting admin is done on your behalf: auth checks your own token."""
    user = await service.update_user(
        session, api, user_id, body, admin, ip=ip, admin_token=admin_token
    )
    return UserRead.model_validate(user.model_dump())
