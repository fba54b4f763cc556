"""Request bodies over the limit are refused with 413, declared or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import APIRouter, Request
from pydantic import BaseModel

from flightdeck_common.errors import PROBLEM_JSON
from flightdeck_common.middleware.body_limit import DRAIN_CAP_BYTES, BodySizeLimitMiddleware

LIMIT = 4096
OVERRIDES = {"/things/big/": 4 * LIMIT, "/things/big/tiny/": 2048}

router = APIRouter(prefix="/things")
calls: list[str] = []


class Document(BaseModel):
    text: str


@router.post("/raw")
async def upload_raw(request: Request) -> dict[str, int]:
    """Read the raw body."""
    calls.append("raw")
    return {"received": len(await request.body())}


@router.post("/document")
async def upload_document(document: Document) -> dict[str, int]:
    """Read a JSON body through pydantic."""
    calls.append("document")
    return {"received": len(document.text)}


@router.post("/big/upload")
async def upload_big(request: Request) -> dict[str, int]:
    """Read a body under the larger override."""
    return {"received": len(await request.body())}


@router.post("/big/tiny/upload")
async def upload_tiny(request: Request) -> dict[str, int]:
    """Read a body under the smaller, longer override."""
    return {"received": len(await request.body())}


@pytest.fixture
async def client(start_service: Any, make_settings: Any) -> Any:
    calls.clear()
    service = await start_service(
        router, settings=make_settings(max_body_bytes=LIMIT), body_limit_overrides=OVERRIDES
    )
    return service.client


async def chunks(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"x" * piece


def assert_too_large(response: Any, limit: int) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == 413
    assert f"{limit} bytes" in body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


# --- declared Content-Length ---------------------------------------------------------------


async def test_declared_length_over_limit_is_refused_without_calling_the_endpoint(
    client: Any,
) -> None:
    response = await client.post("/things/raw", content=b"x" * (LIMIT + 1))
    assert_too_large(response, LIMIT)
    # A moderate excess is read and dropped, so the connection stays usable.
    assert "connection" not in response.headers
    assert calls == []


async def test_huge_declared_length_is_refused_at_once_and_closes(client: Any) -> None:
    huge = {"content-length": str(LIMIT + DRAIN_CAP_BYTES + 1)}
    response = await client.post("/things/raw", content=b"x", headers=huge)
    assert_too_large(response, LIMIT)
    assert response.headers["connection"] == "close"
    assert calls == []


async def test_declared_length_at_the_limit_passes(client: Any) -> None:
    response = await client.post("/things/raw", content=b"x" * LIMIT)
    assert response.status_code == 200
    assert response.json() == {"received": LIMIT}
    assert calls == ["raw"]


async def test_declared_length_is_checked_before_json_parsing(client: Any) -> None:
    response = await client.post("/things/document", json={"text": "y" * LIMIT})
    assert_too_large(response, LIMIT)
    assert calls == []


async def test_declared_and_streamed_rejections_share_one_code(client: Any) -> None:
    declared = await client.post("/things/raw", content=b"x" * (LIMIT + 1))
    streamed = await client.post("/things/raw", content=chunks(LIMIT + 1))
    assert streamed.json()["code"] == "payload_too_large"
    assert declared.json()["code"] == streamed.json()["code"]


@pytest.mark.parametrize("declared", [b"abc", b"-1", b"1.5", b""])
async def test_invalid_content_length_is_a_400(client: Any, declared: bytes) -> None:
    response = await client.post(
        "/things/raw", content=b"abc", headers={"content-length": declared}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "bad_request"
    assert "Content-Length" in body["detail"]
    assert calls == []


async def test_bodyless_requests_are_untouched(client: Any) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200


# --- streamed bodies (no Content-Length) -----------------------------------------------------


async def test_streamed_body_over_limit_is_refused(client: Any) -> None:
    response = await client.post("/things/raw", content=chunks(LIMIT + 1))
    assert_too_large(response, LIMIT)
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("size", [0, 10, LIMIT])
async def test_streamed_body_within_limit_passes(client: Any, size: int) -> None:
    response = await client.post("/things/raw", content=chunks(size))
    assert response.status_code == 200
    assert response.json() == {"received": size}


async def test_streamed_json_within_limit_passes(client: Any) -> None:
    async def document() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        yield b"z" * 100
        yield b'"}'

    response = await client.post(
        "/things/document", content=document(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"received": 100}


async def test_streamed_json_over_limit_is_refused(client: Any) -> None:
    response = await client.post(
        "/things/document",
        content=chunks(LIMIT * 2),
        headers={"content-type": "application/json"},
    )
    assert_too_large(response, LIMIT)


# --- per-path overrides ----------------------------------------------------------------------


async def test_override_allows_larger_bodies_under_its_prefix(client: Any) -> None:
    size = 3 * LIMIT
    assert (await client.post("/things/big/upload", content=b"x" * size)).status_code == 200
    assert (await client.post("/things/big/upload", content=chunks(size))).status_code == 200
    assert_too_large(await client.post("/things/raw", content=b"x" * size), LIMIT)


async def test_override_still_has_a_limit(client: Any) -> None:
    limit = OVERRIDES["/things/big/"]
    assert_too_large(await client.post("/things/big/upload", content=b"x" * (limit + 1)), limit)
    assert_too_large(await client.post("/things/big/upload", content=chunks(limit + 1)), limit)


async def test_longest_matching_prefix_wins(client: Any) -> None:
    limit = OVERRIDES["/things/big/tiny/"]
    ok = await client.post("/things/big/tiny/upload", content=b"x" * limit)
    assert ok.status_code == 200
    assert_too_large(
        await client.post("/things/big/tiny/upload", content=b"x" * (limit + 1)), limit
    )
    assert_too_large(await client.post("/things/big/tiny/upload", content=chunks(limit + 1)), limit)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/things/raw", LIMIT),
        ("/things/big", LIMIT),  # the prefix includes the trailing slash
        ("/things/big/upload", 4 * LIMIT),
        ("/things/big/tiny/upload", 2048),
        ("/things/big/tinyish", 4 * LIMIT),
    ],
)
def test_limit_for_path(path: str, expected: int) -> None:
    # Declared shortest first: the middleware must sort, not rely on insertion order.
    middleware = BodySizeLimitMiddleware(_never_called, max_bytes=LIMIT, overrides=OVERRIDES)
    assert middleware.limit_for(path) == expected
    reversed_overrides = dict(reversed(list(OVERRIDES.items())))
    middleware = BodySizeLimitMiddleware(
        _never_called, max_bytes=LIMIT, overrides=reversed_overrides
    )
    assert middleware.limit_for(path) == expected


# --- the middleware on its own ---------------------------------------------------------------


async def _never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app must not be called")


async def _drive(
    app: Any, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> list[dict[str, Any]]:
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
        for i, chunk in enumerate(body_chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/upload", "headers": headers}
    await BodySizeLimitMiddleware(app, max_bytes=1024)(scope, receive, send)
    return sent


async def _read_all_then_answer(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


async def test_body_longer_than_its_declared_length_is_still_capped() -> None:
    sent = await _drive(
        _read_all_then_answer, [b"x" * 600, b"x" * 600], [(b"content-length", b"10")]
    )
    assert sent[0]["status"] == 413
    assert (b"content-type", PROBLEM_JSON.encode()) in sent[0]["headers"]


async def test_plain_app_gets_the_body_when_within_limit() -> None:
    sent = await _drive(_read_all_then_answer, [b"x" * 512, b"x" * 512], [])
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b"read"


async def test_overflow_after_the_response_started_is_not_masked() -> None:
    async def answer_then_read(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    with pytest.raises(Exception, match="exceeds the limit"):
        await _drive(answer_then_read, [b"x" * 1000, b"x" * 1000], [])
