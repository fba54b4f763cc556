"""FastAPI dependencies every service uses (typed aliases for route signatures)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.db import session_scope
from flightdeck_common.rate_limit import client_ip
from flightdeck_common.resources import Resources, get_resources


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's single transaction: committed when the endpoint returns without error."""
    resources = get_resources(request)
    async with session_scope(resources.sessionmaker) as session:
        yield session


ResourcesDep = Annotated[Resources, Depends(get_resources)]
# scope="function": commit before the response is sent, so a failed commit is a failed request.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
# The client address as uvicorn saw it (X-Forwarded-For trusted only from the ingress).
ClientIp = Annotated[str, Depends(client_ip)]
