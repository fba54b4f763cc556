"""Keyset (cursor) pagination: opaque cursors and the list envelope."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from flightdeck_common.errors import InvalidCursor

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_CURSOR_LENGTH = 512
# Integer keys fit a signed 64-bit column on every backend.
MAX_DB_INT = 2**63 - 1


class Page(BaseModel, Generic[T]):
    """A page of results: ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null on the last page."
    )


def encode_cursor(values: list[Any]) -> str:
    """Encode the sort key of the last row seen as an opaque URL-safe string."""
    encoded = [{"dt": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(encoded, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """Decode a cursor made by :func:`encode_cursor`; raises InvalidCursor when tampered."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor is too long")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this API returned") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidCursor("cursor is not one this API returned")
    decoded: list[Any] = []
    for value in values:
        if isinstance(value, dict):
            try:
                moment = datetime.fromisoformat(value["dt"])
                if moment.tzinfo is not None:
                    moment.astimezone(UTC)  # must be representable in UTC (the column's zone)
                decoded.append(moment)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise InvalidCursor("cursor is not one this API returned") from exc
        elif value is None or isinstance(value, int | str | float):
            decoded.append(value)
        else:
            raise InvalidCursor("cursor is not one this API returned")
    return decoded
