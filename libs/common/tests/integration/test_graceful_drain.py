"""A stop signal first takes a service out of load balancing: `/readyz` answers 503
`draining` while requests are still served, then the process stops by itself
(``shutdown_drain_seconds``), through the real ``flightdeck-pipeline serve`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flightdeck_common.devstack.ports import free_port

DRAIN_SECONDS = 2.0


def _serve(tmp_path: Path, drain_seconds: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "FLIGHTDECK_PIPELINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
        "FLIGHTDECK_PIPELINE_SHUTDOWN_DRAIN_SECONDS": str(drain_seconds),
        "LOG_JSON": "false",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("flightdeck-pipeline")), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the child holds its own descriptor
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the service did not become ready"
        time.sleep(0.1)


@pytest.fixture
def stop_at_end() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_stop_signal_drains_before_stopping(
    tmp_path: Path, stop_at_end: list[subprocess.Popen[bytes]]
) -> None:
    process, url = _serve(tmp_path, DRAIN_SECONDS)
    stop_at_end.append(process)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)

    with httpx.Client(base_url=url, timeout=5) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["code"] == "draining"
        # Still serving everything else meanwhile.
        assert http.get("/healthz").status_code == 200
        assert http.get("/pipelines/openapi.json").status_code == 200
    exit_code = process.wait(30)
    stopped_after = time.monotonic() - signalled
    assert stopped_after >= DRAIN_SECONDS
    # uvicorn re-raises the signal after its graceful shutdown.
    assert exit_code in (0, -signal.SIGTERM), (tmp_path / "serve.log").read_text()
    log = (tmp_path / "serve.log").read_text()
    assert "not ready from now, stopping in 2 s" in log


def test_without_drain_a_stop_signal_stops_at_once(
    tmp_path: Path, stop_at_end: list[subprocess.Popen[bytes]]
) -> None:
    process, _ = _serve(tmp_path, 0)
    stop_at_end.append(process)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    exit_code = process.wait(30)
    assert time.monotonic() - signalled < DRAIN_SECONDS
    assert exit_code in (0, -signal.SIGTERM)
