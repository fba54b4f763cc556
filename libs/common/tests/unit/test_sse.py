"""Server-Sent Events: the wire format, and EventSourceResponse driven as an ASGI app
(heartbeats, client disconnects, failing feeds, expiry, cleanup of the feed)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from flightdeck_common.errors import NotFound, problem_responses
from flightdeck_common.sse import (
    HEARTBEAT,
    EventSourceResponse,
    ServerSentEvent,
    event_schema,
    event_stream_responses,
    format_event,
    json_event,
)

pytestmark = pytest.mark.timeout(10)


def test_event_fields_in_wire_order() -> None:
    assert format_event("hello", event="greeting", id=7, retry=3000) == (
        b"retry: 3000\nid: 7\nevent: greeting\ndata: hello\n\n"
    )


def test_multi_line_data_becomes_several_data_lines() -> None:
    assert format_event("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert format_event("") == b"data: \n\n"


def test_comments_and_messages_without_data() -> None:
    assert format_event(comment="ping") == HEARTBEAT == b": ping\n\n"
    assert format_event(comment="two\nlines") == b": two\n: lines\n\n"
    assert format_event(id=41, retry=3000) == b"retry: 3000\nid: 41\n\n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": "x", "event": "a\nb"}, "single line"),
        ({"data": "x", "id": "1\r2"}, "single line"),
        ({"data": "x", "id": "1\x002"}, "NUL"),
        ({"retry": -1}, "non-negative"),
        ({}, "at least one"),
    ],
)
def test_malformed_messages_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_event(**kwargs)


def test_json_event_is_compact_single_line_json() -> None:
    event = json_event(
        {"at": datetime(2026, 1, 2, tzinfo=UTC), "text": "a\nb"}, event="run.updated", id=3
    )
    assert event.encode() == (
        b'id: 3\nevent: run.updated\ndata: {"at":"2026-01-02T00:00:00Z","text":"a\\nb"}\n\n'
    )


def test_event_stream_responses_document_errors_as_problems() -> None:
    responses = event_stream_responses(
        "Live things.", example=": ping\n\n", errors=problem_responses(NotFound)
    )
    assert responses[200] == {
        "description": "Live things.",
        "content": {"text/event-stream": {"schema": event_schema(), "example": ": ping\n\n"}},
    }
    assert responses[404] == {
        "description": "Not Found",
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "examples": {
                    "not_found": {
                        "summary": "Not Found",
                        "value": {
                            "type": "urn:flightdeck:problem:not_found",
                            "title": "Not Found",
                            "status": 404,
                            "code": "not_found",
                        },
                    }
                },
            }
        },
    }


def test_the_stream_schema_describes_one_event_as_an_event_source_dispatches_it() -> None:
    """A stream's schema is one event, not the body as a string (the fuzzer, reading it
    the OpenAPI 3.2 way, found every event of both streams "not of type string")."""
    validator = jsonschema.Draft202012Validator(
        event_schema({"type": "object", "required": ["seq"]}),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    validator.validate({"id": "1", "event": "audit", "data": '{"seq": 1}'})
    validator.validate({"data": "{}", "event": "message", "id": "0", "retry": 3000})
    assert not validator.is_valid("id: 1\nevent: audit\ndata: {}\n\n")
    assert not validator.is_valid({"id": "1", "retry": 3000})  # no data: never dispatched
    schema = event_schema({"$ref": "#/components/schemas/AuditEventRead"})
    assert schema["properties"]["data"]["contentMediaType"] == "application/json"
    assert schema["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/AuditEventRead"
    }


class Client:
    """Plays the server side of ASGI for one request: collects what the app sends."""

    def __init__(self, *, fail_send_after: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.disconnected = asyncio.Event()
        self.fail_send_after = fail_send_after
        self._request_sent = False

    async def receive(self) -> dict[str, Any]:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        bodies = [m for m in self.messages if m["type"] == "http.response.body"]
        if self.fail_send_after is not None and len(bodies) >= self.fail_send_after:
            raise OSError("connection reset by peer")
        self.messages.append(message)

    @property
    def chunks(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]

    @property
    def headers(self) -> dict[str, str]:
        start = self.messages[0]
        assert start["type"] == "http.response.start"
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def finished(self) -> bool:
        return bool(self.messages) and self.messages[-1].get("more_body") is False


class Feed:
    """An async generator feed that records whether it was closed."""

    def __init__(self, events: list[ServerSentEvent], *, then_wait: bool = True) -> None:
        self.events = events
        self.then_wait = then_wait
        self.closed = False

    async def __call__(self) -> AsyncIterator[ServerSentEvent]:
        try:
            for event in self.events:
                yield event
            if self.then_wait:
                await asyncio.Event().wait()
        finally:
            self.closed = True


SCOPE = {"type": "http", "path": "/things/events", "asgi": {"spec_version": "2.3"}}


async def run(response: EventSourceResponse, client: Client) -> asyncio.Task[None]:
    task = asyncio.create_task(response(SCOPE, client.receive, client.send))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    return task


async def test_headers_events_and_heartbeats_while_idle() -> None:
    feed = Feed([ServerSentEvent(retry=3000), ServerSentEvent(data="{}", event="x", id=1)])
    client = Client()
    task = await run(EventSourceResponse(feed(), heartbeat_seconds=0.05), client)
    await asyncio.sleep(0.18)
    client.disconnected.set()
    await asyncio.wait_for(task, 1)

    assert client.headers["content-type"] == "text/event-stream"
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert client.chunks[:2] == [b"retry: 3000\n\n", b"id: 1\nevent: x\ndata: {}\n\n"]
    assert 2 <= client.chunks.count(HEARTBEAT) <= 4
    assert feed.closed


async def test_heartbeat_only_when_idle() -> None:
    async def busy() -> AsyncIterator[ServerSentEvent]:
        for n in range(20):
            yield ServerSentEvent(data=str(n))
            await asyncio.sleep(0.01)

    client = Client()
    task = await run(EventSourceResponse(busy(), heartbeat_seconds=0.05), client)
    await asyncio.wait_for(task, 2)
    assert HEARTBEAT not in client.chunks
    assert client.finished


async def test_client_disconnect_cancels_and_closes_the_feed_at_once() -> None:
    feed = Feed([ServerSentEvent(data="first")])
    client = Client()
    response = EventSourceResponse(feed(), heartbeat_seconds=None)
    task = await run(response, client)
    await asyncio.sleep(0.05)
    started = time.monotonic()
    client.disconnected.set()
    await asyncio.wait_for(task, 2)
    # At once: the feed never yields again, so only the disconnect can end it.
    assert time.monotonic() - started < 0.5
    assert feed.closed
    assert response.client_disconnected
    assert not client.finished  # nothing more is sent to a gone client


async def test_failing_send_counts_as_a_disconnect() -> None:
    feed = Feed([ServerSentEvent(data=str(n)) for n in range(5)])
    client = Client(fail_send_after=2)
    response = EventSourceResponse(feed(), heartbeat_seconds=None)
    task = await run(response, client)
    await asyncio.wait_for(task, 1)
    assert client.chunks == [b"data: 0\n\n", b"data: 1\n\n"]
    assert feed.closed
    assert response.client_disconnected


async def test_a_failing_feed_ends_the_stream_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(data="ok")
        raise RuntimeError("bug in the feed")

    caplog.set_level(logging.ERROR, "flightdeck_common.sse")
    client = Client()
    task = await run(EventSourceResponse(broken(), heartbeat_seconds=None), client)
    await asyncio.wait_for(task, 1)
    assert client.chunks == [b"data: ok\n\n", b""]
    assert client.finished
    assert any("event stream /things/events failed" in r.getMessage() for r in caplog.records)


async def test_the_stream_ends_at_expires_at() -> None:
    feed = Feed([ServerSentEvent(data="x")])
    client = Client()
    response = EventSourceResponse(feed(), heartbeat_seconds=None, expires_at=time.time() + 0.1)
    task = await run(response, client)
    await asyncio.wait_for(task, 1)
    assert client.finished
    assert feed.closed
    assert not response.client_disconnected


async def test_the_stream_ends_once_still_authorized_answers_false() -> None:
    checks: list[float] = []

    async def still_authorized() -> bool:
        checks.append(time.monotonic())
        return len(checks) < 3  # revoked at the third check

    async def busy() -> AsyncIterator[ServerSentEvent]:
        # Never idle, so no heartbeat is sent: the check runs on its own interval.
        for n in range(1000):
            yield ServerSentEvent(data=str(n))
            await asyncio.sleep(0.01)

    client = Client()
    response = EventSourceResponse(
        busy(), heartbeat_seconds=0.05, still_authorized=still_authorized
    )
    task = await run(response, client)
    await asyncio.wait_for(task, 2)
    assert client.finished
    assert len(checks) == 3
    assert HEARTBEAT not in client.chunks
    assert not response.client_disconnected


async def test_a_failing_authorization_check_ends_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def still_authorized() -> bool:
        raise ConnectionError("revocations unreachable")

    feed = Feed([ServerSentEvent(data="x")])
    client = Client()
    response = EventSourceResponse(
        feed(), heartbeat_seconds=0.05, still_authorized=still_authorized
    )
    with caplog.at_level(logging.WARNING, logger="flightdeck_common.sse"):
        task = await run(response, client)
        await asyncio.wait_for(task, 1)
    assert client.finished
    assert feed.closed
    assert any("cannot be re-checked" in r.getMessage() for r in caplog.records)


def test_heartbeat_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="heartbeat_seconds"):
        EventSourceResponse(Feed([])(), heartbeat_seconds=0)
