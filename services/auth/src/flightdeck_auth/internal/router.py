"""Internal API for the other services: user administration, approval keys, revocations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status

from flightdeck_auth.dependencies import RevocationReader, SessionDep, UserAdministrator
from flightdeck_auth.internal.capabilities import MissingAudience
from flightdeck_auth.internal.schemas import (
    InternalUserCreate,
    InternalUserUpdate,
    RevocationFeed,
    RevocationRead,
)
from flightdeck_auth.runtime import RuntimeDep
from flightdeck_auth.security.approval_keys import parse_approval_key
from flightdeck_auth.tokens.revocations import RevocationRepository
from flightdeck_auth.users import service
from flightdeck_auth.users.models import User
from flightdeck_auth.users.repository import UserRepository
from flightdeck_auth.users.schemas import ApprovalKeyRead, UserRead, user_read
from flightdeck_auth.users.service import InvalidPasswordHash
from flightdeck_common.auth.claims import Role
from flightdeck_common.auth.dependencies import get_auth_context
from flightdeck_common.auth.errors import InvalidToken, TokenRevoked
from flightdeck_common.errors import FlightdeckError, InvalidCursor, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_DB_INT, MAX_PAGE_SIZE, Page
from flightdeck_common.params import IdPath
from flightdeck_common.passwords import InvalidUsername
from flightdeck_common.user_errors import (
    ActingAdminRequired,
    ApprovalKeyNotFound,
    InvalidSignedApproval,
    LastAdmin,
    SignedApprovalRequired,
    UsernameTaken,
    UserNotFound,
)


def _service_route_errors(*errors: type[FlightdeckError]) -> dict[int | str, dict[str, Any]]:
    """A service token's problems (missing, invalid, revoked) and the route's own."""
    return problem_responses(InvalidToken, TokenRevoked, MissingAudience, *errors)


router = APIRouter(prefix="/auth/internal", tags=["internal"])


async def _user(session: SessionDep, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound()
    return user


@router.post(
    "/users",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    summary="Create a user from a password hash",
    responses={
        200: {"model": UserRead, "description": "Already created with this idempotency key"},
        **_service_route_errors(
            UsernameTaken,
            InvalidPasswordHash,
            InvalidUsername,
            SignedApprovalRequired,
            InvalidSignedApproval,
        ),
    },
)
async def create_internal_user(
    body: InternalUserCreate,
    claims: UserAdministrator,
    session: SessionDep,
    rt: RuntimeDep,
    response: Response,
) -> UserRead:
    """Create a user from an argon2id hash (admin's approval path); idempotent by key. An
    admin needs the signed approval it comes from."""
    user, created = await service.create_user_for_service(
        session,
        rt,
        username=body.username,
        password_hash=body.password_hash,
        role=body.role.value,
        actor=f"{body.actor} via {claims.sub}",
        origin_ref=body.idempotency_key,
        approval=body.approval,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return user_read(user)


@router.get(
    "/users",
    response_model=Page[UserRead],
    summary="List users",
    responses=_service_route_errors(InvalidCursor),
)
async def list_internal_users(
    claims: UserAdministrator,
    session: SessionDep,
    role: Role | None = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(max_length=80)] = None,
    username: Annotated[
        str | None, Query(max_length=80, description="Exactly this (normalized) username.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[UserRead]:
    """List users (filters: role, is_active, q = username contains, username = exact)."""
    rows, next_cursor = await UserRepository(session).page(
        role=role.value if role else None,
        is_active=is_active,
        query=q,
        username=username,
        limit=limit,
        cursor=cursor,
    )
    return Page[UserRead](items=[user_read(u) for u in rows], next_cursor=next_cursor)


@router.get(
    "/users/{user_id}",
    response_model=UserRead,
    summary="Read a user",
    responses=_service_route_errors(UserNotFound),
)
async def read_internal_user(
    user_id: IdPath, claims: UserAdministrator, session: SessionDep
) -> UserRead:
    """One user."""
    return user_read(await _user(session, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserRead,
    summary="Change a user's role or active flag",
    responses=_service_route_errors(UserNotFound, LastAdmin, ActingAdminRequired),
)
async def update_internal_user(
    user_id: IdPath,
    body: InternalUserUpdate,
    claims: UserAdministrator,
    session: SessionDep,
    rt: RuntimeDep,
    request: Request,
    acting_user_token: Annotated[
        str | None,
        Header(
            alias="X-Flightdeck-Acting-User",
            max_length=4096,
            description=(
                "The access token of the admin on whose behalf the service asks; required "
                "to grant `admin` (403 `acting_admin_required` otherwise)."
            ),
        ),
    ] = None,
) -> UserRead:
    """Change role and/or active flag; the user's sessions end at once everywhere.
    Granting `admin` also needs the acting admin's own access token."""
    user = await _user(session, user_id)
    acting = await _acting_user(request, session, acting_user_token)
    actor = f"{body.actor} via {claims.sub}"
    if acting is not None:
        actor = f"{acting.username} via {claims.sub}"
    await service.update_user(
        session,
        rt,
        user,
        role=body.role.value if body.role else None,
        is_active=body.is_active,
        actor=actor,
        acting_user=acting,
    )
    return user_read(user)


async def _acting_user(request: Request, session: SessionDep, token: str | None) -> User | None:
    """The user whose own access token (verified as every user token is: signature,
    audience, expiry, revocation) came with the request; None without one. A token that
    does not verify is refused rather than ignored."""
    if token is None:
        return None
    context = get_auth_context(request)
    try:
        claims = await context.verifier.verify(token, context.user_audience)
    except (InvalidToken, TokenRevoked) as exc:
        raise ActingAdminRequired(f"The acting admin's token does not verify: {exc}") from None
    if claims.is_service or not claims.sub.isdigit():
        raise ActingAdminRequired("The acting user's token must be a user's access token.")
    if claims.mfa_enrolment_required:
        raise ActingAdminRequired("The acting admin must enrol TOTP first.")
    return await session.get(User, int(claims.sub))


@router.get(
    "/users/{user_id}/approval-key",
    response_model=ApprovalKeyRead,
    summary="Read a user's approval key",
    responses=_service_route_errors(UserNotFound, ApprovalKeyNotFound),
)
async def read_approval_key(
    user_id: IdPath, claims: UserAdministrator, session: SessionDep
) -> ApprovalKeyRead:
    """The user's registered approval public key."""
    user = await _user(session, user_id)
    if user.approval_key_pem is None or user.approval_key_updated_at is None:
        raise ApprovalKeyNotFound()
    key = parse_approval_key(user.approval_key_pem)
    return ApprovalKeyRead(
        user_id=user.id,
        algorithm=key.algorithm,
        fingerprint=key.fingerprint,
        public_key_pem=key.pem,
        updated_at=user.approval_key_updated_at,
    )


@router.get(
    "/revocations",
    response_model=RevocationFeed,
    summary="Follow token revocations",
    responses=_service_route_errors(),
)
async def list_revocations(
    claims: RevocationReader,
    session: SessionDep,
    after: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> RevocationFeed:
    """Unexpired revocations after a cursor, for services that follow them without Redis."""
    rows = await RevocationRepository(session).feed(after, limit)
    items = [
        RevocationRead(
            id=r.id, jti=r.jti, subject=r.subject, revoked_at=r.revoked_at, expires_at=r.expires_at
        )
        for r in rows
    ]
    next_cursor = items[-1].id if len(items) == limit else None
    return RevocationFeed(items=items, next_cursor=next_cursor)
