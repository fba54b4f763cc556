"""A throwaway Redis server on loopback (no persistence), for tests and ``make run-full``."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Self

from flightdeck_common.devstack.lifecycle import StartStop
from flightdeck_common.devstack.ports import LOOPBACK
from flightdeck_common.devstack.processes import DevstackError, ManagedProcess


def find_redis_server() -> str:
    """Path of ``redis-server`` (PATH, then /usr/bin); raises ``FileNotFoundError``."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if found is None:
        raise FileNotFoundError("redis-server not found on PATH (apt-get install redis-server)")
    return found


def redis_ping(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """Send an inline ``PING`` and return whether the answer is ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(StartStop):
    """``redis-server`` bound to 127.0.0.1:``port`` with RDB and AOF disabled.

    Output goes to ``log_path`` (default: ``redis.log`` next to ``data_dir``).
    Restartable: ``stop()`` then ``start()`` again works (the data is not kept).
    """

    def __init__(self, data_dir: Path, port: int, *, log_path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path or data_dir.parent / "redis.log"
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Connection URL of database 0, e.g. ``redis://127.0.0.1:6390/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.is_running

    def ensure_running(self) -> None:
        """Raise ``ProcessExitedError`` with the log tail if the server has died."""
        if self._process is None:
            raise DevstackError("redis was never started")
        self._process.ensure_running()

    def start(self, timeout: float = 15.0) -> Self:
        """Start the server and wait until it answers ``PING``."""
        if self.is_running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
        ]  # fmt: skip
        self._process = ManagedProcess("redis", argv, None, self.log_path, cwd=self.data_dir)
        self._process.start()
        deadline = time.monotonic() + timeout
        while not redis_ping(self.port):
            try:
                self._process.ensure_running()
                if time.monotonic() > deadline:
                    raise DevstackError(
                        f"redis on port {self.port} did not answer PING within {timeout:g}s; "
                        f"log {self.log_path}:\n{self._process.tail()}"
                    )
            except BaseException:
                self._process.stop()
                raise
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        if self._process is not None:
            self._process.stop(timeout)
