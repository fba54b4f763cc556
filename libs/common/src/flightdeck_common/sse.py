"""Server-Sent Events (``text/event-stream``): wire format, heartbeats, disconnects.

A live feed is an async iterator of :class:`ServerSentEvent`; :class:`EventSourceResponse`
sends it and takes care of what every feed needs::

    async def audit_feed() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(retry=3000)
        while True:
            event = await next_audit_event()
            yield ServerSentEvent(data=event.json, event="audit", id=event.id)

    @router.get(
        "/admin/audit-events/stream",
        response_class=EventSourceResponse,
        responses=event_stream_responses("Audit events.", errors=USER_AUTH_RESPONSES),
    )
    async def stream_audit_events(user: AdminUser) -> EventSourceResponse:
        return EventSourceResponse(audit_feed(), heartbeat_seconds=15, expires_at=user.exp)

- a heartbeat comment (``: ping``) whenever nothing was sent for ``heartbeat_seconds``, so
  proxies keep the connection and clients notice a dead one;
- the feed is cancelled (and closed) as soon as the client disconnects, whether the server
  reports it through ``receive`` or by failing ``send``;
- the stream ends at ``expires_at`` (the access token's ``exp``): the client reconnects
  with a fresh token, so a revoked or expired token does not keep a stream open forever;
- a feed that fails ends the stream (logged) instead of breaking the connection mid-event;
  the client reconnects after ``retry`` and resumes with ``Last-Event-ID``;
- headers that stop caches and proxies from buffering (``Cache-Control: no-cache``,
  ``X-Accel-Buffering: no``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import pydantic_core
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from flightdeck_common.errors import PROBLEM_JSON, is_connection_failure
from flightdeck_common.openapi import PROBLEM_REF

logger = logging.getLogger(__name__)

SSE_MEDIA_TYPE = "text/event-stream"
HEARTBEAT = b": ping\n\n"
SSE_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache",
    # nginx (and ingress controllers built on it) would otherwise buffer the stream.
    "X-Accel-Buffering": "no",
}
# How long a feed may take to clean up (close its database session...) once cancelled.
_CLOSE_TIMEOUT_SECONDS = 5.0
# How often ``still_authorized`` is asked on a stream without heartbeats.
_DEFAULT_RECHECK_SECONDS = 15.0


def _lines(value: str) -> list[str]:
    # The SSE line terminators are \r\n, \r and \n.
    return value.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _single_line(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {name!r} must be a single line: {value!r}")
    return value


def format_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: int | str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one message of an event stream (terminated by a blank line).

    ``data`` is sent as is (multi-line data becomes several ``data:`` lines); a message
    without ``data`` is not dispatched by ``EventSource`` but still sets its last event id
    (``id``) and reconnection delay (``retry``, milliseconds). ``event`` and ``id`` must be
    single lines; ``id`` must not contain NUL (browsers would ignore it).
    """
    parts: list[str] = []
    if comment is not None:
        parts.extend(f": {line}" if line else ":" for line in _lines(comment))
    if retry is not None:
        if retry < 0:
            raise ValueError("SSE 'retry' must be a non-negative number of milliseconds")
        parts.append(f"retry: {int(retry)}")
    if id is not None:
        id_text = _single_line("id", str(id))
        if "\0" in id_text:
            raise ValueError("SSE 'id' must not contain NUL")
        parts.append(f"id: {id_text}")
    if event is not None:
        parts.append(f"event: {_single_line('event', event)}")
    if data is not None:
        parts.extend(f"data: {line}" for line in _lines(data))
    if not parts:
        raise ValueError("an SSE message needs at least one of data, event, id, retry, comment")
    return ("\n".join(parts) + "\n\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One message of an event stream; see :func:`format_event` for the fields."""

    data: str | None = None
    event: str | None = None
    id: int | str | None = None
    retry: int | None = None
    comment: str | None = None

    def encode(self) -> bytes:
        return format_event(
            self.data, event=self.event, id=self.id, retry=self.retry, comment=self.comment
        )


def event_schema(data_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """JSON Schema of one event of a stream, as an ``EventSource`` dispatches it.

    For ``text/event-stream`` the schema describes each event, not the body as a string
    (OpenAPI 3.2 calls it ``itemSchema``; before 3.2, tools such as schemathesis read
    ``schema`` that way). ``data`` is JSON; ``data_schema`` says what it holds when every
    event of the stream carries the same thing. Comments (``: ping``) are not events.
    """
    data: dict[str, Any] = {
        "type": "string",
        "contentMediaType": "application/json",
        "description": "The payload, as JSON.",
    }
    if data_schema is not None:
        data["contentSchema"] = dict(data_schema)
    return {
        "type": "object",
        "title": "ServerSentEvent",
        "required": ["data"],
        "properties": {
            "id": {
                "type": "string",
                "description": "Position in the stream; send it back as `Last-Event-ID`.",
            },
            "event": {"type": "string", "description": "The kind of event."},
            "data": data,
            "retry": {
                "type": "integer",
                "minimum": 0,
                "description": "Reconnection delay in milliseconds.",
            },
        },
    }


def event_stream_responses(
    description: str,
    *,
    example: str | None = None,
    data_schema: Mapping[str, Any] | None = None,
    errors: Mapping[int | str, Mapping[str, Any]] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route with ``response_class=EventSourceResponse``.

    200 is documented as ``text/event-stream`` whose schema is one event
    (:func:`event_schema`, with ``data_schema`` for its ``data``); ``errors``
    (``USER_AUTH_RESPONSES``, ``problem_responses(...)``) as ``application/problem+json``.
    Pass the errors here, not to the router: FastAPI documents error models under the
    route's media type, which would claim the errors are event streams.
    """
    stream: dict[str, Any] = {"schema": event_schema(data_schema)}
    if example is not None:
        stream["example"] = example
    responses: dict[int | str, dict[str, Any]] = {
        200: {"description": description, "content": {SSE_MEDIA_TYPE: stream}}
    }
    for status, entry in (errors or {}).items():
        problem: dict[str, Any] = {"schema": {"$ref": PROBLEM_REF}}
        examples = entry.get("content", {}).get("application/json", {}).get("examples")
        if examples:
            problem["examples"] = dict(examples)
        responses[status] = {
            "description": entry.get("description", "Error"),
            "content": {PROBLEM_JSON: problem},
        }
    return responses


def json_event(
    payload: Any, *, event: str | None = None, id: int | str | None = None
) -> ServerSentEvent:
    """An event whose data is ``payload`` as compact JSON (datetimes, UUIDs... as strings)."""
    return ServerSentEvent(data=pydantic_core.to_json(payload).decode(), event=event, id=id)


class EventSourceResponse(StreamingResponse):
    """A ``text/event-stream`` response sending an async iterator of events.

    ``content`` yields :class:`ServerSentEvent` (or already encoded ``bytes``). A heartbeat
    comment is sent whenever the stream was idle for ``heartbeat_seconds`` (``None``: never).
    The stream ends when ``content`` is exhausted or fails, when the client disconnects, at
    the unix time ``expires_at``, or when ``still_authorized`` (awaited every
    ``heartbeat_seconds``, busy or idle) answers False or raises, e.g. because the token
    that opened the stream was revoked; ``content`` is then closed (``aclose()``), so a
    feed written as an async generator can clean up in ``finally``.
    """

    media_type = SSE_MEDIA_TYPE

    def __init__(
        self,
        content: AsyncIterable[ServerSentEvent | bytes],
        *,
        heartbeat_seconds: float | None = 15.0,
        expires_at: float | None = None,
        still_authorized: Callable[[], Awaitable[bool]] | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if heartbeat_seconds is not None and heartbeat_seconds <= 0:
            raise ValueError("heartbeat_seconds must be positive (or None)")
        self._chunks = _encoded(content)
        super().__init__(
            self._chunks,
            status_code=status_code,
            # Exactly the SSE media type: the stream is UTF-8 by definition, no charset.
            headers={"Content-Type": SSE_MEDIA_TYPE, **SSE_HEADERS, **(headers or {})},
            media_type=SSE_MEDIA_TYPE,
            background=background,
        )
        self.source = content
        self.heartbeat_seconds = heartbeat_seconds
        self.expires_at = expires_at
        self.still_authorized = still_authorized
        self.client_disconnected = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
        except OSError:
            self.client_disconnected = True
            await _close(self._chunks)
            await _close(self.source)
            return
        last_sent = time.monotonic()
        write_lock = anyio.Lock()

        async def write(chunk: bytes) -> None:
            nonlocal last_sent
            async with write_lock:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                last_sent = time.monotonic()

        async with anyio.create_task_group() as tasks:

            def stop() -> None:
                tasks.cancel_scope.cancel()

            async def pump() -> None:
                try:
                    async for chunk in self._chunks:
                        await write(chunk)
                except OSError:  # how servers on ASGI spec >= 2.4 report a gone client
                    self.client_disconnected = True
                except Exception as exc:
                    _log_feed_failure(scope, exc)
                finally:
                    await _close(self._chunks)
                    await _close(self.source)
                    stop()

            async def heartbeat(interval: float) -> None:
                while True:
                    await anyio.sleep(max(0.0, last_sent + interval - time.monotonic()))
                    if time.monotonic() - last_sent >= interval:
                        try:
                            await write(HEARTBEAT)
                        except OSError:
                            self.client_disconnected = True
                            stop()
                            return

            async def watch_disconnect() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        self.client_disconnected = True
                        stop()
                        return

            async def recheck(interval: float, check: Callable[[], Awaitable[bool]]) -> None:
                while True:
                    await anyio.sleep(interval)
                    try:
                        authorized = await check()
                    except Exception as exc:
                        logger.warning(
                            "event stream %s ended: its authorization cannot be re-checked: %r",
                            scope.get("path"),
                            exc,
                        )
                        authorized = False
                    if not authorized:
                        stop()
                        return

            async def expire(at: float) -> None:
                await anyio.sleep(max(0.0, at - time.time()))
                stop()

            tasks.start_soon(pump)
            tasks.start_soon(watch_disconnect)
            if self.heartbeat_seconds is not None:
                tasks.start_soon(heartbeat, self.heartbeat_seconds)
            if self.still_authorized is not None:
                interval = self.heartbeat_seconds or _DEFAULT_RECHECK_SECONDS
                tasks.start_soon(recheck, interval, self.still_authorized)
            if self.expires_at is not None and math.isfinite(self.expires_at):
                tasks.start_soon(expire, self.expires_at)

        if not self.client_disconnected:
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                self.client_disconnected = True
        if self.background is not None:
            await self.background()


async def _encoded(content: AsyncIterable[ServerSentEvent | bytes]) -> AsyncIterator[bytes]:
    async for item in content:
        yield item if isinstance(item, bytes) else item.encode()


async def _close(content: AsyncIterable[Any]) -> None:
    """Close ``content`` (when it can be) even though the surrounding scope is cancelled."""
    aclose = getattr(content, "aclose", None)
    if aclose is None:
        return
    with anyio.move_on_after(_CLOSE_TIMEOUT_SECONDS, shield=True):
        try:
            await aclose()
        except Exception:
            logger.warning("closing an event stream failed", exc_info=True)


def _log_feed_failure(scope: Scope, exc: Exception) -> None:
    path = scope.get("path")
    if is_connection_failure(exc):
        logger.warning("event stream %s ended: dependency unavailable: %r", path, exc)
    else:
        logger.error("event stream %s failed", path, exc_info=exc)
