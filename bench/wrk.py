"""Driving wrk: a Lua script per scenario (headers, body, random ids) and a JSON summary."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.report import Measurement

WRK_TIMEOUT = "60s"  # slow aggregates at 1M runs take seconds; wrk's default 2 s would cut them

# Called once at the end in wrk's main thread: one line the driver parses.
_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

_THREAD_SEED = r"""
local thread_count = 0
setup = function(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end
init = function(args)
  math.randomseed(os.time() * 100 + (thread_id or 0))
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


@dataclass(frozen=True)
class Request:
    """What wrk sends. ``path`` may contain ``{id}``, replaced per request by a random
    integer in ``[1, id_max]``."""

    path: str
    method: str = "GET"
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    id_max: int = 0

    def lua(self) -> str:
        lines = [f"wrk.method = {_lua_string(self.method)}"]
        for name, value in self.headers:
            lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
        if self.body is not None:
            lines.append(f"wrk.body = {_lua_string(self.body)}")
        if "{id}" in self.path:
            before, after = self.path.split("{id}", 1)
            lines.append(_THREAD_SEED)
            lines.append(
                "request = function()\n"
                f"  local path = {_lua_string(before)} .. math.random(1, {self.id_max})"
                f" .. {_lua_string(after)}\n"
                "  return wrk.format(nil, path)\n"
                "end"
            )
        else:
            lines.append(f"wrk.path = {_lua_string(self.path)}")
        lines.append(_DONE)
        return "\n".join(lines) + "\n"


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
    request: Request,
    *,
    seconds: float,
    connections: int,
    threads: int,
    script_path: Path,
) -> Measurement:
    """Run wrk once for ``seconds`` and return what it measured (client CPU included)."""
    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(request.lua())
    argv = [
        "wrk",
        f"--threads={max(1, min(threads, connections))}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT}",
        f"--script={script_path}",
        base_url + request.path.split("{id}", 1)[0],
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = None
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            summary = json.loads(line.removeprefix("BENCH_JSON "))
    if result.returncode != 0 or summary is None:
        raise RuntimeError(
            f"wrk failed (exit {result.returncode}): {result.stderr.strip()}\n{result.stdout}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    errors = sum(summary[key] for key in ("connect", "read", "write", "status", "timeout"))
    # wrk counts every answer as a request; only the 2xx/3xx ones count as served here.
    requests = int(summary["requests"]) - int(summary["status"])
    return Measurement(
        requests=requests,
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000 if requests else None,
        p99_ms=summary["p99_us"] / 1000 if requests else None,
        errors=int(errors),
        client_cpu_seconds=cpu,
    )
