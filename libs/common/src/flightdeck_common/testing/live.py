"""Test helpers for endless responses: an app under a real uvicorn on a free port, and a
client-side reader of ``text/event-stream``.

httpx's ASGITransport collects the whole response before returning it, so it cannot read a
stream that never ends; tests of live feeds serve the app with :func:`serve` (in a task of
the test's event loop) and read it over real HTTP with :class:`SseReader`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import FastAPI

from flightdeck_common.http_server import guarded_protocol
from flightdeck_common.settings import DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_HEADER_BYTES

READ_TIMEOUT = 3.0


@dataclass
class SseMessage:
    """One message of an event stream, as a client parses it."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def is_event(self) -> bool:
        return self.data is not None

    def as_dispatched(self) -> dict[str, str | int]:
        """The event as ``EventSource`` dispatches it, the shape a stream's OpenAPI schema
        documents (``flightdeck_common.sse.event_schema``): ``event`` defaults to
        ``message``, ``id`` and ``retry`` appear when sent."""
        assert self.data is not None, "not an event: nothing is dispatched without data"
        event: dict[str, str | int] = {"data": self.data, "event": self.event or "message"}
        if self.id is not None:
            event["id"] = self.id
        if self.retry is not None:
            event["retry"] = self.retry
        return event


class SseReader:
    """Reads an open ``text/event-stream`` response message by message."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next_message(self, within: float = READ_TIMEOUT) -> SseMessage | None:
        """The next message (event, comment or id/retry only); None when the stream ended."""
        async with asyncio.timeout(within):
            message = SseMessage()
            data: list[str] = []
            seen = False
            async for line in self._lines:
                if line == "":
                    if seen:
                        message.data = "\n".join(data) if data else None
                        return message
                    continue
                seen = True
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    message.comments.append(value)
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    message.id = value
                elif name == "event":
                    message.event = value
                elif name == "retry":
                    message.retry = int(value)
            return None

    async def next_event(self, within: float = READ_TIMEOUT) -> SseMessage:
        """The next dispatched event (comments and id/retry-only messages are skipped)."""
        async with asyncio.timeout(within):
            while True:
                message = await self.next_message(within)
                assert message is not None, "the stream ended"
                if message.is_event:
                    return message


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # leave pytest's signal handlers alone


@contextlib.asynccontextmanager
async def serve(
    app: FastAPI,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    header_read_timeout: float = DEFAULT_HEADER_READ_TIMEOUT,
) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """Serve ``app`` (lifespan included) on a free loopback port, with the HTTP protocol
    and request-head limits of the real server; yield its base URL and the server (set
    ``server.should_exit`` to stop it early)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=guarded_protocol(max_header_bytes, header_read_timeout),
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await task
