"""A time limit on each wait for request body data (slow clients, slow-loris bodies).

uvicorn waits for a request body as long as the connection stays open; a client that sends
its headers and then a byte every few seconds would hold a request (and its database
session, once the handler runs) for hours. Here each ``receive()`` of the body may wait at
most ``timeout_seconds``; when one takes longer the client gets 408 ``request_timeout`` and
the connection is closed.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flightdeck_common.errors import RequestTimeout


class BodyReadTimedOut(RequestTimeout):
    """Raised from ``receive`` when the next piece of the body does not arrive in time."""


class BodyReadTimeoutMiddleware:
    """Answer 408 (and close) when a request body stalls for ``timeout_seconds``.

    Only the body is timed: once it is complete (or the response has started, e.g. a
    stream that ignores the body), ``receive()`` waits for a disconnect as long as it
    likes. Whatever the app makes of the error raised from ``receive`` (FastAPI turns
    body-reading failures into a 400), the client gets the 408.
    """

    def __init__(self, app: ASGIApp, *, timeout_seconds: float) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = False
        timed_out = False
        response_started = False

        async def timed_receive() -> Message:
            nonlocal body_complete, timed_out
            if body_complete or response_started:
                return await receive()
            if timed_out:
                raise BodyReadTimedOut(_detail(self.timeout_seconds))
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise BodyReadTimedOut(_detail(self.timeout_seconds)) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if timed_out and not response_started:
                return  # the app's own answer to the stalled body is replaced by our 408
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except BodyReadTimedOut:
            if response_started:
                raise
        if timed_out and not response_started:
            error = BodyReadTimedOut(_detail(self.timeout_seconds))
            # The rest of the body may still be on its way: the connection cannot be reused.
            error.headers = {"Connection": "close"}
            await error.to_response()(scope, receive, send)


def _detail(timeout: float) -> str:
    return f"The request body did not arrive in time (no data for {timeout:g} s)."
