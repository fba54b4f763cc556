"""Slow bodies, slow or oversized request heads, against a real uvicorn on a socket.

The app is a factory-built service served by ``flightdeck_common.testing.live.serve`` with
the production HTTP protocol (``flightdeck_common.http_server``) and 1 s timeouts. The
clients are raw sockets, so they can misbehave the way an attacker would. Bounds are
generous (10x the timeout): the point is "answered, not held forever".
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from flightdeck_common.errors import PROBLEM_JSON
from flightdeck_common.testing.live import serve

TIMEOUT = 1.0
WITHIN = 10 * TIMEOUT
MAX_HEADER_BYTES = 8192

router = APIRouter(prefix="/things")


class Note(BaseModel):
    text: str = ""


@router.post("/notes")
async def post_note(note: Note) -> dict[str, int]:
    """Read a JSON body."""
    return {"length": len(note.text)}


@router.get("/ping")
async def ping() -> dict[str, str]:
    """Answer at once."""
    return {"pong": "yes"}


@pytest.fixture
async def server(build_app: Any, make_settings: Any) -> AsyncIterator[tuple[str, int]]:
    app = build_app(router, settings=make_settings(body_read_timeout_seconds=TIMEOUT))
    async with serve(app, max_header_bytes=MAX_HEADER_BYTES, header_read_timeout=TIMEOUT) as (
        url,
        _,
    ):
        yield url, int(url.rsplit(":", 1)[1])


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one answer on a connection the server then closes."""
    raw = await asyncio.wait_for(reader.read(), WITHIN)  # until EOF: the server hung up
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0] else 0
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return status, headers, body


async def assert_still_serving(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=WITHIN) as client:
        response = await client.get("/things/ping")
    assert response.status_code == 200


# --- slow bodies ------------------------------------------------------------------------------


async def test_a_trickled_body_gets_408_and_the_connection_is_closed(
    server: tuple[str, int],
) -> None:
    url, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"text": "' + b"x" * 40 + b'"}'
    writer.write(
        b"POST /things/notes HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:1]
    )
    await writer.drain()

    async def trickle() -> None:
        for byte in body[1:]:
            await asyncio.sleep(2 * TIMEOUT)
            writer.write(bytes([byte]))
            await writer.drain()

    trickler = asyncio.create_task(trickle())
    started = time.monotonic()
    try:
        # Meanwhile the server answers everyone else.
        await assert_still_serving(url)
        status, headers, payload = await read_answer(reader)
    finally:
        trickler.cancel()
        writer.close()
    assert time.monotonic() - started < WITHIN
    assert status == 408
    assert headers["connection"] == "close"
    assert headers["content-type"] == PROBLEM_JSON
    assert json.loads(payload)["code"] == "request_timeout"
    await assert_still_serving(url)


async def test_a_body_sent_in_time_is_served(server: tuple[str, int]) -> None:
    url, _ = server

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b'{"text": ', b'"hello"', b"}"):
            await asyncio.sleep(TIMEOUT / 10)  # far inside the timeout, even on a busy machine
            yield piece

    async with httpx.AsyncClient(base_url=url, timeout=WITHIN) as client:
        response = await client.post(
            "/things/notes", content=pieces(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 200
    assert response.json() == {"length": 5}


# --- request heads ----------------------------------------------------------------------------


async def test_a_partial_request_head_gets_408_and_is_closed(server: tuple[str, int]) -> None:
    url, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /things/ping HTTP/1.1\r\nHost: test\r\nX-Slow: 1")
    await writer.drain()
    try:
        status, _, payload = await read_answer(reader)
    finally:
        writer.close()
    assert time.monotonic() - started < WITHIN
    assert status == 408
    assert json.loads(payload)["code"] == "request_timeout"
    await assert_still_serving(url)


async def test_a_silent_connection_is_closed(server: tuple[str, int]) -> None:
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(), WITHIN) == b""
    finally:
        writer.close()
    assert time.monotonic() - started < WITHIN


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"cookie": "a" * 64 * 1024}, id="64 KiB cookie"),
        pytest.param({f"x-field-{i}": "v" for i in range(1000)}, id="1000 headers"),
        pytest.param({"x-big": "b" * (MAX_HEADER_BYTES + 1)}, id="just over the limit"),
    ],
)
async def test_oversized_request_heads_get_431(
    server: tuple[str, int], headers: dict[str, str]
) -> None:
    url, _ = server
    async with httpx.AsyncClient(base_url=url, timeout=WITHIN) as client:
        response = await client.get("/things/ping", headers=headers)
    assert response.status_code == 431
    assert response.headers["connection"] == "close"
    assert response.json()["code"] == "headers_too_large"
    await assert_still_serving(url)


async def test_an_endless_header_is_cut_off(server: tuple[str, int]) -> None:
    url, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /things/ping HTTP/1.1\r\nHost: test\r\nX-Endless: ")
    try:
        for _ in range(8):  # 4 x the limit, never ending the header
            writer.write(b"e" * (MAX_HEADER_BYTES // 2))
            await writer.drain()
    except ConnectionError:
        pass  # already answered and closed
    try:
        status, _, _ = await read_answer(reader)
    finally:
        writer.close()
    assert status == 431
    await assert_still_serving(url)


async def test_a_head_within_the_limits_is_served(server: tuple[str, int]) -> None:
    url, _ = server
    headers = {f"x-field-{i}": "v" * 40 for i in range(100)}  # ~5 KiB, 100 fields
    async with httpx.AsyncClient(base_url=url, timeout=WITHIN) as client:
        response = await client.get("/things/ping", headers=headers)
    assert response.status_code == 200
