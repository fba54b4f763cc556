"""OAuth2 client credentials for service accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form

from flightdeck_auth.dependencies import ClientIp, SessionDep
from flightdeck_auth.exceptions import InvalidClient, InvalidScope, UnsupportedGrantType
from flightdeck_auth.runtime import RuntimeDep
from flightdeck_auth.service_accounts.service import issue_service_token
from flightdeck_auth.tokens.schemas import ServiceToken
from flightdeck_common.errors import RateLimited, problem_responses
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
