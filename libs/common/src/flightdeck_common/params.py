"""Typed request parameters shared by the services' routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime

from flightdeck_common.pagination import MAX_DB_INT

# A database id in a path: out-of-range values are a 422, never a database error.
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="Numeric id.")]


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("datetime out of range once converted to UTC") from exc


# A timestamp with a timezone (naive ones are a 422), normalized to UTC.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
