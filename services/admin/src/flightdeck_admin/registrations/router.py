"""Registration requests: filed by anyone (rate limited), decided by admins with a signature."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, status

from flightdeck_admin.auth_api import AuthApiDep, AuthRejected
from flightdeck_admin.registrations import service
from flightdeck_admin.registrations.dependencies import PasswordHasherDep, SettingsDep
from flightdeck_admin.registrations.exceptions import (
    ApprovalKeyRequired,
    ApprovalMayHaveSucceeded,
    InvalidDecisionSignature,
    InvalidSignatureEncoding,
    InvalidSignedAt,
    RegistrationRequestNotFound,
    RequestAlreadyDecided,
    SignatureExpired,
    SignatureReplayed,
    UsernameUnavailable,
)
from flightdeck_admin.registrations.models import RequestStatus
from flightdeck_admin.registrations.repository import RegistrationRepository
from flightdeck_admin.registrations.schemas import (
    APPROVAL_EXAMPLES,
    REGISTRATION_EXAMPLES,
    REJECTION_EXAMPLES,
    ApprovalDecision,
    RegistrationCreate,
    RegistrationRequestFiled,
    RegistrationRequestRead,
    ReviewDecision,
)
from flightdeck_common.auth.dependencies import AdminUser
from flightdeck_common.auth.errors import (
    AuthUnavailable,
    InsufficientRole,
    InvalidToken,
    MfaEnrolmentRequired,
    TokenRevoked,
)
from flightdeck_common.dependencies import ClientIp, ResourcesDep, SessionDep
from flightdeck_common.errors import (
    FlightdeckError,
    InvalidCursor,
    RateLimited,
    problem_responses,
)
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page
from flightdeck_common.params import IdPath
from flightdeck_common.passwords import InvalidUsername, WeakPassword
from flightdeck_common.rate_limit import rate_limit
from flightdeck_common.user_errors import UsernameTaken

router = APIRouter(prefix="/admin", tags=["registrations"])


def _admin_route_errors(*errors: type[FlightdeckError]) -> dict[int | str, dict[str, Any]]:
    """The problems of an admin-only route: authentication's and its own, one entry per status."""
    return problem_responses(
        InvalidToken, TokenRevoked, InsufficientRole, MfaEnrolmentRequired, AuthUnavailable, *errors
    )


REVIEW_ERRORS: tuple[type[FlightdeckError], ...] = (
    RegistrationRequestNotFound,
    InvalidSignedAt,
    SignatureExpired,
    InvalidSignatureEncoding,
    SignatureReplayed,
    RequestAlreadyDecided,
    ApprovalKeyRequired,
    InvalidDecisionSignature,
    AuthUnavailable,
    # Any other refusal of auth's internal API, passed on with auth's status and code.
    AuthRejected,
)


@router.post(
    "/registration-requests",
    response_model=RegistrationRequestFiled,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask for an account",
    dependencies=[Depends(rate_limit("registration"))],
    responses=problem_responses(
        InvalidUsername,
        WeakPassword,
        UsernameUnavailable,
        RateLimited,
        AuthUnavailable,
        AuthRejected,
    ),
)
async def create_registration_request(
    body: Annotated[RegistrationCreate, Body(openapi_examples=REGISTRATION_EXAMPLES)],
    session: SessionDep,
    api: AuthApiDep,
    hasher: PasswordHasherDep,
    ip: ClientIp,
) -> RegistrationRequestFiled:
    """Ask for an account; an admin reviews the request (no sign-in needed)."""
    request = await service.file_request(session, api, hasher, body, ip=ip)
    return RegistrationRequestFiled.model_validate(request)


@router.get(
    "/registration-requests",
    response_model=Page[RegistrationRequestRead],
    summary="List registration requests",
    responses=_admin_route_errors(InvalidCursor),
)
async def list_registration_requests(
    admin: AdminUser,
    session: SessionDep,
    status: RequestStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[RegistrationRequestRead]:
    """List registration requests, newest first (filter: status; keyset pagination)."""
    rows, next_cursor = await RegistrationRepository(session).page(
        status=status.value if status else None, limit=limit, cursor=cursor
    )
    return Page[RegistrationRequestRead](
        items=[RegistrationRequestRead.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/registration-requests/{request_id}",
    response_model=RegistrationRequestRead,
    summary="Read a registration request",
    responses=_admin_route_errors(RegistrationRequestNotFound),
)
async def read_registration_request(
    request_id: IdPath, admin: AdminUser, session: SessionDep
) -> RegistrationRequestRead:
    """One registration request with its decision."""
    return RegistrationRequestRead.model_validate(await service.get_request(session, request_id))


@router.post(
    "/registration-requests/{request_id}/approve",
    response_model=RegistrationRequestRead,
    summary="Approve a registration request (signed)",
    responses=_admin_route_errors(*REVIEW_ERRORS, UsernameTaken),
)
async def approve_registration_request(
    request_id: IdPath,
    body: Annotated[ApprovalDecision, Body(openapi_examples=APPROVAL_EXAMPLES)],
    admin: AdminUser,
    resources: ResourcesDep,
    api: AuthApiDep,
    settings: SettingsDep,
    ip: ClientIp,
) -> RegistrationRequestRead:
    """Approve with a signature over "{id}:approve:{role}:{username}:{signed_at}"."""
    request = await service.approve(
        resources.sessionmaker, api, settings, request_id, body, admin, ip=ip
    )
    return RegistrationRequestRead.model_validate(request)


@router.post(
    "/registration-requests/{request_id}/reject",
    response_model=RegistrationRequestRead,
    summary="Reject a registration request (signed)",
    responses=_admin_route_errors(*REVIEW_ERRORS, ApprovalMayHaveSucceeded),
)
async def reject_registration_request(
    request_id: IdPath,
    body: Annotated[ReviewDecision, Body(openapi_examples=REJECTION_EXAMPLES)],
    admin: AdminUser,
    resources: ResourcesDep,
    api: AuthApiDep,
    settings: SettingsDep,
    ip: ClientIp,
) -> RegistrationRequestRead:
    """Reject with a signature over "{id}:reject::{username}:{signed_at}"."""
    request = await service.reject(
        resources.sessionmaker, api, settings, request_id, body, admin, ip=ip
    )
    return RegistrationRequestRead.model_validate(request)
