"""Driving wrk: a Lua script per scenario (``bench.wrk_script``) and a JSON summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from bench.report import Measurement
from bench.wrk_script import Request, lua_script

WRK_TIMEOUT = "60s"  # slow aggregates at 1M runs take seconds; wrk's default 2 s would cut them


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian when missing and we are root, else exit."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it (apt-get install -y wrk)", flush=True)
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=False)
            subprocess.run(install, stdout=subprocess.DEVNULL, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit(
        "bench: wrk is not installed. Install it first: `sudo apt-get install -y wrk` "
        "(Debian/Ubuntu), then run the benchmark again."
    )


def run_wrk(
    base_url: str,
    requests: Sequence[Request],
    *,
    seconds: float,
    connections: int,
    threads: int,
    script_path: Path,
    pause_ms: int = 0,
) -> Measurement:
    """Run wrk once for ``seconds`` with ``requests`` (one, or a weighted mix; each
    connection pausing ``pause_ms`` before each request) and return what it measured, its
    own CPU included (exact even while another wrk runs)."""
    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(lua_script(requests, pause_ms))
    argv = [
        "wrk",
        f"--threads={max(1, min(threads, connections))}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT}",
        f"--script={script_path}",
        base_url + requests[0].split_path()[0],
    ]
    returncode, stdout, stderr, cpu = _run_measured(argv, timeout=seconds + 120)
    summary = None
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            summary = json.loads(line.removeprefix("BENCH_JSON "))
    if returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed (exit {returncode}): {stderr.strip()}\n{stdout}")
    errors = sum(summary[key] for key in ("connect", "read", "write", "status", "timeout"))
    # wrk counts every answer as a request; only the 2xx/3xx ones count as served here.
    served = int(summary["requests"]) - int(summary["status"])
    return Measurement(
        requests=served,
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000 if served else None,
        p99_ms=summary["p99_us"] / 1000 if served else None,
        errors=int(errors),
        client_cpu_seconds=cpu,
    )


def _run_measured(argv: list[str], *, timeout: float) -> tuple[int, str, str, float]:
    """Run ``argv``: exit code, stdout, stderr and the CPU seconds of that child alone
    (``wait4``, where ``RUSAGE_CHILDREN`` would mix in children reaped meanwhile)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err)
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    return process.returncode, stdout, stderr, usage.ru_utime + usage.ru_stime
