"""X-Request-ID: accepted when harmless, generated otherwise, echoed and logged."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from fastapi import APIRouter, Request

from flightdeck_common.logging import request_id_var
from flightdeck_common.middleware.request_id import RequestIdMiddleware, new_request_id

GENERATED = re.compile(r"^[0-9a-f]{32}$")

router = APIRouter(prefix="/things")


@router.get("/echo-request-id")
async def echo_request_id(request: Request) -> dict[str, str | None]:
    """Return the request id as seen by the endpoint (state and contextvar) and log a line."""
    logging.getLogger("flightdeck.test").info("inside the endpoint", extra={"step": "handler"})
    return {"state": request.state.request_id, "context": request_id_var.get()}


@pytest.fixture
async def client(start_service: Any) -> Any:
    return (await start_service(router)).client


async def call_middleware(header_values: list[bytes]) -> tuple[list[tuple[bytes, bytes]], Any]:
    """Drive the middleware with a raw ASGI scope (bytes a client library would refuse)."""
    seen: dict[str, Any] = {}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen["state"] = scope["state"]["request_id"]
        seen["context"] = request_id_var.get()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-request-id", value) for value in header_values],
    }
    await RequestIdMiddleware(inner)(scope, receive, send)
    return messages[0]["headers"], seen


def response_ids(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [value for name, value in headers if name.lower() == b"x-request-id"]


def test_new_request_id_is_32_hex_and_unique() -> None:
    ids = {new_request_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(GENERATED.match(i) for i in ids)


async def test_generated_when_absent(client: Any) -> None:
    first = await client.get("/things/echo-request-id")
    second = await client.get("/things/echo-request-id")
    for response in (first, second):
        request_id = response.headers["x-request-id"]
        assert GENERATED.match(request_id)
        assert response.json() == {"state": request_id, "context": request_id}
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "incoming",
    ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "trace.1:span_2-x", "A" * 128],
)
async def test_valid_incoming_id_is_kept(client: Any, incoming: str) -> None:
    response = await client.get("/things/echo-request-id", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming
    assert response.json() == {"state": incoming, "context": incoming}


@pytest.mark.parametrize(
    "incoming",
    ["A" * 129, "has space", "semi;colon", "<script>", "a/b", 'quote"d', "caf\u00e9", ""],
)
async def test_invalid_incoming_id_is_replaced(client: Any, incoming: str) -> None:
    response = await client.get(
        "/things/echo-request-id", headers={"X-Request-ID": incoming.encode("latin-1")}
    )
    request_id = response.headers["x-request-id"]
    assert request_id != incoming
    assert GENERATED.match(request_id)
    assert response.json()["state"] == request_id


@pytest.mark.parametrize(
    "incoming",
    [
        b"abc\r\nSet-Cookie: session=evil",
        b"abc\r\n",
        b"\nabc",
        b"abc\x00",
        b"abc\ttab",
        "\u2028".encode() + b"abc",
    ],
)
async def test_header_injection_attempts_are_replaced(incoming: bytes) -> None:
    headers, seen = await call_middleware([incoming])
    assert response_ids(headers) == [seen["state"].encode()]
    assert GENERATED.match(seen["state"])
    assert seen["context"] == seen["state"]


async def test_trailing_newline_is_rejected() -> None:
    headers, seen = await call_middleware([b"abc\n"])
    assert GENERATED.match(seen["state"])
    assert b"\n" not in response_ids(headers)[0]


async def test_response_has_exactly_one_request_id_header() -> None:
    headers, seen = await call_middleware([b"first", b"second"])
    assert response_ids(headers) == [b"first"]
    assert seen["state"] == "first"


async def test_context_is_reset_after_the_request() -> None:
    assert request_id_var.get() is None
    await call_middleware([b"scoped-id"])
    assert request_id_var.get() is None


async def test_request_id_is_in_problem_bodies(client: Any) -> None:
    response = await client.get("/things/missing", headers={"X-Request-ID": "problem-id-1"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "problem-id-1"
    assert response.json()["request_id"] == "problem-id-1"


async def test_request_id_is_on_json_log_lines_of_the_request(
    client: Any, json_logs: list[dict[str, Any]]
) -> None:
    response = await client.get("/things/echo-request-id", headers={"X-Request-ID": "log-id-7"})
    assert response.status_code == 200
    handler_lines = [line for line in json_logs if line["logger"] == "flightdeck.test"]
    access_lines = [line for line in json_logs if line["logger"] == "flightdeck.access"]
    assert len(handler_lines) == 1
    assert handler_lines[0]["request_id"] == "log-id-7"
    assert handler_lines[0]["message"] == "inside the endpoint"
    assert handler_lines[0]["step"] == "handler"
    assert handler_lines[0]["service"] == "test"
    assert [line["request_id"] for line in access_lines] == ["log-id-7"]


async def test_requests_do_not_share_request_ids_in_logs(
    client: Any, json_logs: list[dict[str, Any]]
) -> None:
    await client.get("/things/echo-request-id", headers={"X-Request-ID": "one"})
    await client.get("/things/echo-request-id", headers={"X-Request-ID": "two"})
    ids = [line["request_id"] for line in json_logs if line["logger"] == "flightdeck.test"]
    assert ids == ["one", "two"]
