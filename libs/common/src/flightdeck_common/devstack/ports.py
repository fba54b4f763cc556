"""Loopback port helpers: pick a free port, check one, wait for a TCP or HTTP server."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx

LOOPBACK = "127.0.0.1"
_POLL_INTERVAL = 0.1


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could not bind ``host:port`` right now.

    ``SO_REUSEADDR`` is set like uvicorn, Traefik, PostgreSQL and Redis do, so sockets
    lingering in TIME_WAIT do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    check: Callable[[], None] | None = None,
) -> None:
    """Wait until a TCP connection to ``host:port`` succeeds.

    ``check`` is called on every attempt and may raise to abort early (for example when
    the process that should open the port has died). Raises ``TimeoutError``.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while True:
        if check is not None:
            check()
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{host}:{port} not accepting connections after {timeout:g}s: {last_error}"
            )
        time.sleep(_POLL_INTERVAL)


def wait_for_http(
    url: str,
    timeout: float = 30.0,
    expect_status: int = 200,
    *,
    check: Callable[[], None] | None = None,
) -> httpx.Response:
    """Poll ``url`` with GET until it answers ``expect_status``; return that response.

    Proxy environment variables are ignored (loopback only). ``check`` is called before
    each attempt and may raise to abort early. Raises ``TimeoutError`` naming the last
    error or status seen.
    """
    deadline = time.monotonic() + timeout
    last: str = "no attempt made"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if check is not None:
                check()
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == expect_status:
                    return response
                last = f"status {response.status_code}: {response.text[:200]!r}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{url} did not answer {expect_status} within {timeout:g}s; last: {last}"
                )
            time.sleep(_POLL_INTERVAL)
