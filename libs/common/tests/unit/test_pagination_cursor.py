"""Opaque keyset cursors: lossless round trip, and every malformed cursor is a 400."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import APIRouter, Query

from flightdeck_common.errors import InvalidCursor
from flightdeck_common.pagination import (
    MAX_CURSOR_LENGTH,
    Page,
    decode_cursor,
    encode_cursor,
)

URL_SAFE = re.compile(r"^[A-Za-z0-9_-]*$")


def raw_cursor(payload: bytes) -> str:
    """A cursor built by hand from raw bytes, the way a tamperer would."""
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


# --- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [datetime(2026, 11, 25, 17, 9, 35, 123456, tzinfo=UTC), 42],
        [datetime(2026, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))), "run-7"],
        [datetime(2026, 1, 1, 12, 0), 1],  # naive stays naive (the repository rejects it)
        ["caf\u00e9 \u2603 / ? & =", None, -3, 2.5],
        [0],
        [""],
        [10**20],
    ],
)
def test_round_trip(values: list[Any]) -> None:
    cursor = encode_cursor(values)
    assert URL_SAFE.match(cursor)
    decoded = decode_cursor(cursor, len(values))
    assert decoded == values
    for original, restored in zip(values, decoded, strict=True):
        assert type(restored) is type(original)
        if isinstance(original, datetime):
            assert restored.tzinfo == original.tzinfo
            assert restored.utcoffset() == original.utcoffset()


def test_aware_datetime_keeps_its_instant_and_offset() -> None:
    moment = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-8)))
    [restored] = decode_cursor(encode_cursor([moment]), 1)
    assert restored == moment.astimezone(UTC)
    assert restored.utcoffset() == timedelta(hours=-8)


def test_cursor_has_no_padding_and_differs_per_value() -> None:
    cursors = {encode_cursor([n]) for n in range(100)}
    assert len(cursors) == 100
    assert not any("=" in c for c in cursors)


def test_typical_cursor_fits_the_length_limit() -> None:
    values = [datetime.now(UTC), "f" * 64, 2**63]
    cursor = encode_cursor(values)
    assert len(cursor) <= MAX_CURSOR_LENGTH
    assert decode_cursor(cursor, 3) == values


# --- malformed cursors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("not a cursor!!", id="garbage"),
        pytest.param("A", id="bad-padding"),
        pytest.param("\u00e9\u00e9\u00e9\u00e9", id="non-ascii"),
        pytest.param(raw_cursor(b"\xff\xfe\xfd"), id="not-utf8"),
        pytest.param(raw_cursor(b"[1,"), id="truncated-json"),
        pytest.param(encode_cursor([1, "abc"])[:-3], id="truncated-cursor"),
        pytest.param(raw_cursor(b'{"dt": "2026-01-01T00:00:00+00:00"}'), id="object"),
        pytest.param(raw_cursor(b'"text"'), id="string"),
        pytest.param(raw_cursor(b"7"), id="number"),
        pytest.param(raw_cursor(b"[[1]]"), id="nested-list"),
        pytest.param(raw_cursor(b'[{"x": 1}]'), id="object-without-dt"),
        pytest.param(raw_cursor(b'[{"dt": "yesterday"}]'), id="bad-datetime"),
        pytest.param(raw_cursor(b'[{"dt": 5}]'), id="datetime-not-string"),
        pytest.param(raw_cursor(b'[{"dt": null}]'), id="datetime-null"),
    ],
)
def test_malformed_cursor_is_invalid(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as excinfo:
        decode_cursor(cursor, 1)
    assert excinfo.value.status_code == 400
    assert excinfo.value.code == "invalid_cursor"


def test_tampered_cursor_is_invalid() -> None:
    cursor = encode_cursor([datetime(2026, 1, 1, tzinfo=UTC), 7])
    payload = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    tampered = raw_cursor(payload.replace(b'"dt"', b'"dx"'))
    with pytest.raises(InvalidCursor):
        decode_cursor(tampered, 2)


@pytest.mark.parametrize("arity", [1, 3])
def test_wrong_arity_is_invalid(arity: int) -> None:
    cursor = encode_cursor([datetime(2026, 1, 1, tzinfo=UTC), 7])
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, arity)


def test_too_long_cursor_is_invalid_before_decoding() -> None:
    long_but_valid = encode_cursor(["x" * MAX_CURSOR_LENGTH])
    assert len(long_but_valid) > MAX_CURSOR_LENGTH
    with pytest.raises(InvalidCursor, match="too long"):
        decode_cursor(long_but_valid, 1)


def test_cursor_at_the_length_limit_is_accepted() -> None:
    # Find a string whose cursor is exactly MAX_CURSOR_LENGTH characters long.
    for size in range(MAX_CURSOR_LENGTH):
        cursor = encode_cursor(["y" * size])
        if len(cursor) >= MAX_CURSOR_LENGTH:
            break
    assert len(cursor) == MAX_CURSOR_LENGTH
    assert decode_cursor(cursor, 1) == ["y" * size]


# --- through an app ---------------------------------------------------------------------------

router = APIRouter(prefix="/things")


@router.get("/page")
async def list_page(cursor: str | None = Query(None)) -> Page[str]:
    """Decode a two-value cursor and hand back a page."""
    values = decode_cursor(cursor, 2) if cursor is not None else []
    return Page[str](items=[json.dumps(v, default=str) for v in values], next_cursor=None)


@pytest.fixture
async def client(start_service: Any) -> Any:
    return (await start_service(router)).client


async def test_valid_cursor_through_an_app(client: Any) -> None:
    cursor = encode_cursor([datetime(2026, 1, 1, tzinfo=UTC), 9])
    response = await client.get("/things/page", params={"cursor": cursor})
    assert response.status_code == 200
    assert response.json() == {
        "items": ['"2026-01-01 00:00:00+00:00"', "9"],
        "next_cursor": None,
    }


@pytest.mark.parametrize(
    ("cursor", "detail"),
    [
        ("garbage!", "cursor is not one this API returned"),
        (encode_cursor([1]), "cursor is not one this API returned"),
        ("A" * (MAX_CURSOR_LENGTH + 1), "cursor is too long"),
    ],
)
async def test_invalid_cursor_is_a_400_problem(client: Any, cursor: str, detail: str) -> None:
    response = await client.get("/things/page", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "invalid_cursor"
    assert body["title"] == "Invalid pagination cursor"
    assert body["detail"] == detail


def test_page_envelope_shape() -> None:
    page = Page[int](items=[1, 2])
    assert page.model_dump() == {"items": [1, 2], "next_cursor": None}
    schema = Page[int].model_json_schema()
    assert set(schema["required"]) == {"items"}
    assert "next_cursor" in schema["properties"]
