"""Refuse JSON request bodies that nest too deeply, before the app parses them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flightdeck_common.errors import JsonTooDeep
from flightdeck_common.json_depth import json_depth_exceeds


class JsonDepthLimitMiddleware:
    """Measure the nesting of JSON bodies and answer 400 ``json_too_deep`` above ``max_depth``.

    A body is JSON when its ``Content-Type`` is ``application/json``, ``application/*+json``
    or missing (FastAPI parses a body without one as JSON). It is read whole (the body-size
    limit outside this middleware bounds it), measured, then handed to the app unchanged.
    ``overrides`` maps a path prefix to its own limit, or to None for routes that read the
    raw body and check it themselves (the GitHub webhook verifies its signature first).
    """

    def __init__(
        self, app: ASGIApp, *, max_depth: int, overrides: dict[str, int | None] | None = None
    ) -> None:
        self.app = app
        self.max_depth = max_depth
        self.overrides = sorted((overrides or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int | None:
        for prefix, limit in self.overrides:
            if path.startswith(prefix):
                return limit
        return self.max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_for(scope["path"]) if scope["type"] == "http" else None
        if limit is None or not _has_json_body(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth_exceeds(body, limit):
            error = JsonTooDeep(f"The JSON body nests arrays and objects deeper than {limit}.")
            await error.to_response()(scope, receive, send)
            return

        replayed = False

        async def replay_receive() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only a disconnect can come
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay_receive, send)


def _has_json_body(scope: Scope) -> bool:
    content_type: bytes | None = None
    has_body = False
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            has_body = value.strip() not in (b"0", b"")
        elif name == b"transfer-encoding":
            has_body = True
    if not has_body:
        return False
    if content_type is None:
        return True
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json" or (
        media_type.startswith(b"application/") and media_type.endswith(b"+json")
    )
