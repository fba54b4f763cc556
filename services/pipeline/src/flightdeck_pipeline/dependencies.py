"""Typed dependencies of the pipeline service's routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.auth.dependencies import (
    USER_AUTH_RESPONSES,
    AdminUser,
    CurrentUser,
    OperatorUser,
)
from flightdeck_common.db import session_scope
from flightdeck_common.dependencies import ReadSessionDep, SessionDep, inline
from flightdeck_common.resources import get_resources
from flightdeck_pipeline.runtime import PipelineRuntime, get_runtime

RuntimeDep = Annotated[PipelineRuntime, Depends(inline(get_runtime))]


async def get_write_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's single transaction, as ``SessionDep``; once it committed, and before
    the response is sent, the cached metrics of the scopes the route marked
    (``PipelineRuntime.mark_stale``) are dropped: the writer's next read sees its write."""
    async with session_scope(get_resources(request).sessionmaker) as session:
        yield session
    runtime = get_runtime(request)
    scopes = runtime.stale_scopes(session)
    if scopes:
        await runtime.after_write(*scopes)


# For routes that write what stats, history or DORA read (scope="function": committed,
# and the cache told, before the response is sent).
WriteSessionDep = Annotated[AsyncSession, Depends(get_write_session, scope="function")]

__all__ = [
    "USER_AUTH_RESPONSES",
    "AdminUser",
    "CurrentUser",
    "OperatorUser",
    "ReadSessionDep",
    "RuntimeDep",
    "SessionDep",
    "WriteSessionDep",
]
