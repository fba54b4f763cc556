"""Reject request bodies over a limit without reading them into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flightdeck_common.errors import BadRequest, FlightdeckError, PayloadTooLarge

# Excess over the limit that is still read (and dropped) before answering 413.
DRAIN_CAP_BYTES = 4 * 1024 * 1024


class BodyTooLarge(PayloadTooLarge):
    """Raised from ``receive`` when a streamed body crosses the limit."""


class BodySizeLimitMiddleware:
    """Cap request bodies: ``Content-Length`` is checked up front, chunked bodies as they stream.

    ``overrides`` maps a path prefix to its own limit (the longest matching prefix wins),
    e.g. ``{"/pipelines/webhooks/": 25 * MIB}``. Whatever the app makes of the error raised
    from ``receive`` (FastAPI turns body-parsing failures into a 400), the client gets 413.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, overrides: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = sorted((overrides or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.overrides:
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared < 0:
            await _reply(BadRequest("Invalid Content-Length header."), scope, receive, send)
            return
        if declared is not None and declared > limit:
            # Read and drop a moderate excess so a proxy in front (Traefik) sees a clean
            # answer instead of a reset; beyond the cap, answer at once and close.
            drained = declared <= limit + DRAIN_CAP_BYTES and await _drain(receive)
            await _reply(BodyTooLarge(_too_large(limit)), scope, receive, send, close=not drained)
            return

        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(_too_large(limit))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded and not response_started:
                return  # the app's own answer to the aborted body is replaced by our 413
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if response_started:
                raise
        if exceeded and not response_started:
            await _reply(BodyTooLarge(_too_large(limit)), scope, receive, send, close=True)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


def _too_large(limit: int) -> str:
    return f"The request body exceeds the limit of {limit} bytes for this route."


async def _drain(receive: Receive) -> bool:
    """Consume the request body without keeping it; False if the client went away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        if not message.get("more_body", False):
            return True


async def _reply(
    error: FlightdeckError, scope: Scope, receive: Receive, send: Send, *, close: bool = True
) -> None:
    if close:
        # The unread body stays on the wire: ask the client to close the connection.
        error.headers = {**(error.headers or {}), "Connection": "close"}
    await error.to_response()(scope, receive, send)
