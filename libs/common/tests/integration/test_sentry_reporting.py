"""Unexpected errors reach Sentry when SENTRY_DSN is set (Sentry faked at its HTTP boundary).

The service runs in a child process: sentry-sdk patches libraries globally (its
integrations stay installed after ``init(dsn=None)``), which once crashed a later
test in the same process.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sentry_sdk
from fastapi import APIRouter

from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import CommonSettings
from flightdeck_common.testing.service_checks import running_app


class _Settings(CommonSettings):
    service_name = "sentrytest"
    public_prefix = "/sentrytest"


router = APIRouter(prefix="/sentrytest")


@router.get("/boom")
async def explode() -> None:
    """Fail on purpose."""
    raise RuntimeError("kaboom-4711")


@pytest.fixture
def fake_sentry() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            received.append(body)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_port}/42", received
    finally:
        server.shutdown()


async def _serve_one_failing_request(dsn: str, db_path: str) -> None:
    """Child process: build the app with Sentry on, hit the failing route, flush."""
    settings = _Settings(
        sentry_dsn=dsn, database_url=f"sqlite+aiosqlite:///{db_path}", log_json=False
    )
    app = create_service_app(
        settings, ServiceSpec(title="t", description="t", version="9.9", routers=[router])
    )
    async with running_app(app) as client:
        response = await client.get("/sentrytest/boom")
    sentry_sdk.flush(timeout=5)
    print(json.dumps({"status": response.status_code, "body": response.text}))


def test_unhandled_error_is_reported_without_leaking_to_the_client(
    fake_sentry: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    dsn, received = fake_sentry
    child = subprocess.run(
        [sys.executable, __file__, dsn, str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    response = json.loads(child.stdout.strip().splitlines()[-1])
    assert response["status"] == 500
    assert "kaboom-4711" not in response["body"]
    envelopes = b"\n".join(received)
    assert b"kaboom-4711" in envelopes
    events = [json.loads(line) for line in envelopes.splitlines() if b'"exception"' in line]
    assert events, "an error event was sent"
    assert events[0]["release"] == "flightdeck-sentrytest@9.9"
    assert events[0]["tags"]["service"] == "sentrytest"


if __name__ == "__main__":
    asyncio.run(_serve_one_failing_request(sys.argv[1], sys.argv[2]))
