"""Slow clients through the real ingress: Traefik's readTimeout and the services' body timeout.

One auth process behind Traefik, with short timeouts: the service waits at most 1 s for
each piece of a body (``body_read_timeout_seconds``), Traefik gives a client 4 s for a
whole request (``transport.respondingTimeouts.readTimeout``). Clients are raw sockets.
Bounds are generous (10x the timeout): the point is "cut off, not held forever".
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.testing.plugin import isolated_stack_config, needs_traefik

pytestmark = [pytest.mark.e2e, needs_traefik]

BODY_TIMEOUT = 1.0
INGRESS_READ_TIMEOUT = 4.0  # well apart from the service's 1 s, so a loaded machine keeps the order
WITHIN = 10 * INGRESS_READ_TIMEOUT
LOGIN_BODY = b'{"username": "admin", "password": "not-the-password-at-all"}'


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="slow-clients-"))
    config = isolated_stack_config(
        base / "var", {"FLIGHTDECK_AUTH_BODY_READ_TIMEOUT_SECONDS": f"{BODY_TIMEOUT:g}"}
    )
    config.services = ["auth"]
    config.ingress_read_timeout = f"{INGRESS_READ_TIMEOUT:g}s"
    try:
        with Stack(config) as running:
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)


class SlowClient:
    """A raw connection that sends ``first``, then one byte of ``rest`` every ``gap``
    seconds, and reads what comes back until the other side hangs up."""

    def __init__(self, port: int, first: bytes, rest: bytes = b"", gap: float = 0.0) -> None:
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=WITHIN)
        self.conn.sendall(first)
        self.stop = threading.Event()
        self.trickler = threading.Thread(target=self._trickle, args=(rest, gap), daemon=True)
        self.trickler.start()

    def _trickle(self, rest: bytes, gap: float) -> None:
        for byte in rest:
            if self.stop.wait(gap):
                return
            try:
                self.conn.sendall(bytes([byte]))
            except OSError:
                return

    def answer(self) -> bytes:
        """Everything received until the connection closed (within ``WITHIN`` seconds)."""
        received = b""
        try:
            while chunk := self.conn.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        finally:
            self.stop.set()
            self.conn.close()
        return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def assert_served(stack: Stack) -> None:
    with httpx.Client(base_url=stack.ingress_url, timeout=WITHIN, trust_env=False) as http:
        assert http.get("/auth/.well-known/jwks.json").status_code == 200


def login_head(length: int) -> bytes:
    return (
        b"POST /auth/login HTTP/1.1\r\nHost: flightdeck\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def test_a_stalled_body_gets_the_service_408_through_the_ingress(stack: Stack) -> None:
    started = time.monotonic()
    client = SlowClient(
        stack.config.ingress_port, login_head(len(LOGIN_BODY)) + LOGIN_BODY[:1], LOGIN_BODY[1:], 5
    )
    assert_served(stack)  # others are served meanwhile
    answer = client.answer()
    assert time.monotonic() - started < WITHIN
    assert status_of(answer) == 408, answer[:200]
    assert b"application/problem+json" in answer
    assert b'"code":"request_timeout"' in answer
    assert_served(stack)


def test_a_trickle_that_never_stalls_is_cut_off_by_the_ingress(stack: Stack) -> None:
    # A byte every 0.3 s keeps the service's 1 s wait happy; the ingress's 4 s for the
    # whole request is what ends it: Traefik answers 504, or 499 when its read deadline hit
    # while it was still streaming the body upstream (seen on a loaded CI machine); 408 if
    # the machine is so loaded that a gap reached the service's timeout first.
    started = time.monotonic()
    body = LOGIN_BODY + b" " * 100
    client = SlowClient(stack.config.ingress_port, login_head(len(body)) + body[:1], body[1:], 0.3)
    answer = client.answer()
    assert time.monotonic() - started < WITHIN
    assert status_of(answer) in (408, 499, 504), answer[:200]
    assert_served(stack)


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b"GET /auth/.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Sl", id="partial"),
        pytest.param(b"GET /auth/.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n", id="no end"),
        pytest.param(b"", id="silent"),
    ],
)
def test_an_incomplete_request_head_is_disconnected_by_the_ingress(
    stack: Stack, first: bytes
) -> None:
    started = time.monotonic()
    client = SlowClient(stack.config.ingress_port, first)
    answer = client.answer()
    # Traefik hangs up, silently or with a 400 for the broken head it has.
    assert answer == b"" or status_of(answer) == 400, answer[:200]
    assert time.monotonic() - started < WITHIN
    assert_served(stack)
