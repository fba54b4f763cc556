"""FastAPI dependencies every service uses (typed aliases for route signatures)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.db import session_scope
from flightdeck_common.rate_limit import client_ip
from flightdeck_common.resources import Resources, get_resources

T = TypeVar("T")


def inline(accessor: Callable[[Request], T]) -> Callable[[Request], Awaitable[T]]:
    """``accessor`` (a plain lookup such as ``request.app.state.x``) as a dependency that
    FastAPI calls on the event loop. It runs plain ``def`` dependencies in its thread pool:
    a thread hop per request and dependency. ``create_service_app`` refuses routes with
    plain ``def`` dependencies, so wrap them: ``Depends(inline(get_runtime))``."""

    async def dependency(request: Request) -> T:
        return accessor(request)

    dependency.__name__ = accessor.__name__
    dependency.__qualname__ = accessor.__qualname__
    dependency.__doc__ = accessor.__doc__
    return dependency


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's single transaction: committed when the endpoint returns without error."""
    resources = get_resources(request)
    async with session_scope(resources.sessionmaker) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for a request that only reads: no transaction block on PostgreSQL (see
    ``create_read_sessionmaker``). Writing through it would commit statement by statement:
    endpoints that write take ``SessionDep``."""
    resources = get_resources(request)
    async with session_scope(resources.read_sessionmaker or resources.sessionmaker) as session:
        yield session


ResourcesDep = Annotated[Resources, Depends(inline(get_resources))]
# scope="function": commit before the response is sent, so a failed commit is a failed request.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
# The client address as uvicorn saw it (X-Forwarded-For trusted only from the ingress).
ClientIp = Annotated[str, Depends(inline(client_ip))]
