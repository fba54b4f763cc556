"""Reject request bodies over a limit without reading them into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flightdeck_common.errors import PayloadTooLarge, problem_response


class BodyTooLarge(PayloadTooLarge):
    """Raised from ``receive`` when a streamed body crosses the limit."""


class BodySizeLimitMiddleware:
    """Cap request bodies: ``Content-Length`` is checked up front, chunked bodies as they stream.

    ``overrides`` maps a path prefix to its own limit (the longest matching prefix wins),
    e.g. ``{"/pipelines/webhooks/": 25 * MIB}``.
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
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _send_problem(scope, receive, send, 400, "invalid Content-Length")
                    return
                if declared > limit:
                    await _send_problem(scope, receive, send, 413, _too_large(limit))
                    return
                break

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(_too_large(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if response_started:
                raise
            await exc.to_response()(scope, receive, send)


def _too_large(limit: int) -> str:
    return f"The request body exceeds the limit of {limit} bytes for this route."


async def _send_problem(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str
) -> None:
    response = problem_response(status, detail=detail, headers={"Connection": "close"})
    await response(scope, receive, send)
