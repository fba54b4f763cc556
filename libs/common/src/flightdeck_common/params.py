"""Typed request parameters shared by the services' routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from flightdeck_common.pagination import MAX_DB_INT

# A database id in a path: out-of-range values are a 422, never a database error.
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="Numeric id.")]
