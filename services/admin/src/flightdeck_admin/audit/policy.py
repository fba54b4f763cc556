"""``GET /admin/policy-decisions``: the decisions recorded in the audit log."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

from flightdeck_admin.audit.repository import AuditRepository
from flightdeck_admin.audit.schemas import PageCursor, PageLimit, PolicyDecisionRead
from flightdeck_common.auth.dependencies import USER_AUTH_RESPONSES, AdminUser
from flightdeck_common.dependencies import SessionDep
from flightdeck_common.errors import InvalidCursor, problem_responses
from flightdeck_common.pagination import DEFAULT_PAGE_SIZE, Page
from flightdeck_common.params import UtcDatetime

# Audit event types that record a decision: auth's login policy, admin's approvals.
POLICY_DECISION_TYPES: Final = (
    "auth.login.policy_decision",
    "admin.registration.approved",
    "admin.registration.rejected",
)

router = APIRouter(tags=["policy"])


@router.get(
    "/policy-decisions",
    response_model=Page[PolicyDecisionRead],
    summary="List policy decisions",
    responses={**USER_AUTH_RESPONSES, **problem_responses(InvalidCursor)},
)
async def list_policy_decisions(
    user: AdminUser,
    session: SessionDep,
    since: UtcDatetime | None = None,
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
) -> Page[PolicyDecisionRead]:
    """Login policy decisions and registration approvals, newest first (keyset pagination)."""
    rows, next_cursor = await AuditRepository.from_session(session).page(
        types=POLICY_DECISION_TYPES, since=since, limit=limit, cursor=cursor
    )
    return Page[PolicyDecisionRead](
        items=[PolicyDecisionRead.from_row(row) for row in rows], next_cursor=next_cursor
    )
