"""One structured log line per request."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("flightdeck.access")

QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLogMiddleware:
    """Logs each request at INFO; successful requests to ``quiet_paths`` (probes, polled
    feeds) at DEBUG."""

    def __init__(self, app: ASGIApp, *, quiet_paths: frozenset[str] = QUIET_PATHS) -> None:
        self.app = app
        self.quiet_paths = QUIET_PATHS | quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_bytes = 0

        async def recording_send(message: Message) -> None:
            nonlocal status, response_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                response_bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            path = scope["path"]
            level = logging.DEBUG if path in self.quiet_paths and status < 400 else logging.INFO
            client = scope.get("client")
            route = scope.get("route")
            logger.log(
                level,
                "%s %s %s",
                scope.get("method"),
                path,
                status,
                extra={
                    "http_method": scope.get("method"),
                    "http_path": path,
                    "http_route": getattr(route, "path", None),
                    "http_status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "response_bytes": response_bytes,
                    "client_ip": client[0] if client else None,
                    "user_agent": _header(scope, b"user-agent"),
                },
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))[:256]
    return None
