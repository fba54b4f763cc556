"""Typed dependencies of the pipeline service's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from flightdeck_common.auth.dependencies import (
    USER_AUTH_RESPONSES,
    AdminUser,
    CurrentUser,
    OperatorUser,
)
from flightdeck_common.dependencies import ReadSessionDep, SessionDep, inline
from flightdeck_pipeline.runtime import PipelineRuntime, get_runtime

RuntimeDep = Annotated[PipelineRuntime, Depends(inline(get_runtime))]

__all__ = [
    "USER_AUTH_RESPONSES",
    "AdminUser",
    "CurrentUser",
    "OperatorUser",
    "ReadSessionDep",
    "RuntimeDep",
    "SessionDep",
]
