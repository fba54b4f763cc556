"""End-to-end helpers for the pipeline's delivery backlog: a burst of prepared, signed
``workflow_run`` deliveries over many concurrent connections, and what is left behind it
in the pipeline's database (pending deliveries, runs, log lines, rollups, mapped counts).

:func:`send_burst` sends deliveries it is given (each its own delivery id and body, built
with :func:`workflow_run_body`) over raw HTTP/1.1 keep-alive connections
(``webhook_flood``'s), ``connections`` at a time in a closed loop, and records every
answer. :class:`PipelineDatabase` reads a stack's pipeline database directly and runs
``flightdeck-pipeline rebuild-rollups --check`` against it. :func:`kill_hard` sends
SIGKILL to a service replica (no drain, no lifespan shutdown: a crash).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from flightdeck_common.devstack.processes import ManagedProcess
from flightdeck_common.devstack.stack import Stack, database_env_var
from flightdeck_common.testing.service_checks import run_service_cli
from flightdeck_common.testing.webhook_flood import (
    FIXTURE,
    TRANSPORT_ERRORS,
    KeepAliveConnections,
    signed_delivery,
)

# The ``action`` GitHub sends with each ``workflow_run`` status.
ACTIONS = {"queued": "requested", "in_progress": "in_progress", "completed": "completed"}
MAPPED_TOTAL = "flightdeck_webhook_mapped_total"


def _github_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def workflow_run_template(repo_root: Path) -> dict[str, Any]:
    """The pipeline's ``requested`` fixture, the payload every body here starts from."""
    template: dict[str, Any] = json.loads((repo_root / FIXTURE).read_bytes())
    return template


def workflow_run_body(
    template: dict[str, Any],
    *,
    repository: str,
    run_id: int,
    status: str = "queued",
    conclusion: str | None = None,
    run_attempt: int = 1,
    created_at: datetime,
    started_at: datetime,
    updated_at: datetime,
) -> bytes:
    """A ``workflow_run`` payload of ``template`` for one run in one state (``status`` is
    GitHub's: queued, in_progress or completed; ``conclusion`` only with completed)."""
    run = {
        **template["workflow_run"],
        "id": run_id,
        "run_attempt": run_attempt,
        "status": status,
        "conclusion": conclusion,
        "created_at": _github_time(created_at),
        "run_started_at": _github_time(started_at),
        "updated_at": _github_time(updated_at),
    }
    payload = {
        **template,
        "action": ACTIONS[status],
        "workflow_run": run,
        "repository": {**template["repository"], "full_name": repository},
    }
    return json.dumps(payload).encode()


@dataclass
class Burst:
    """Every answer of a burst: statuses (transport failures by exception name), the
    ``result`` of each 2xx answer, problem codes, the delivery ids acknowledged."""

    sent: int = 0
    elapsed_s: float = 0.0
    peak_in_flight: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    problem_codes: Counter[str] = field(default_factory=Counter)
    acknowledged: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)

    @property
    def refused(self) -> int:
        """Deliveries not answered 2xx (an error status, a timeout, a broken connection)."""
        return self.sent - sum(
            count for status, count in self.statuses.items() if status.startswith("2")
        )

    @property
    def acknowledged_per_s(self) -> float:
        return len(self.acknowledged) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def send_burst(
    url: str,
    secret: str,
    deliveries: Sequence[tuple[str, bytes]],
    *,
    connections: int,
    timeout_seconds: float = 60.0,
) -> Burst:
    """Send each ``(delivery_id, body)`` once, signed with ``secret``, to ``url`` from
    ``connections`` concurrent senders (one keep-alive connection each at most), each
    answer within ``timeout_seconds``."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    pool = KeepAliveConnections(host, port, timeout_seconds)
    burst = Burst()
    pending: Iterator[tuple[str, bytes]] = iter(deliveries)
    in_flight = 0

    async def sender() -> None:
        nonlocal in_flight
        for delivery_id, body in pending:
            data = signed_delivery(host, port, path, secret.encode(), body, delivery_id, "burst")
            burst.sent += 1
            in_flight += 1
            burst.peak_in_flight = max(burst.peak_in_flight, in_flight)
            began = time.monotonic()
            try:
                status, headers, answer = await pool.exchange(data)
            except TRANSPORT_ERRORS as exc:
                burst.statuses[type(exc).__name__] += 1
                continue
            finally:
                in_flight -= 1
            burst.latencies.append(time.monotonic() - began)
            burst.statuses[str(status)] += 1
            if 200 <= status < 300:
                burst.acknowledged.add(delivery_id)
                burst.results[str(json.loads(answer).get("result"))] += 1
            elif headers.get("content-type", "").startswith("application/problem+json"):
                burst.problem_codes[str(json.loads(answer).get("code"))] += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(sender() for _ in range(max(1, min(connections, len(deliveries))))))
    finally:
        pool.close()
    burst.elapsed_s = time.monotonic() - started
    return burst


def webhook_url(stack: Stack) -> str:
    """The GitHub webhook route through the stack's ingress."""
    return f"{stack.ingress_url}/pipelines/webhooks/github"


def webhook_secret(stack: Stack) -> str:
    """The (first) secret the stack's pipeline verifies deliveries with."""
    return stack.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"].split(",")[0]


def counter_total(metrics: str, name: str) -> float:
    """The sum of every sample of counter ``name`` (all label sets) in a ``/metrics`` text."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith((f"{name}{{", f"{name} ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def mapped_total(base_url: str) -> float:
    """``flightdeck_webhook_mapped_total`` of the pipeline process at ``base_url`` (every
    event and result): the deliveries its worker finished since it started."""
    metrics = httpx.get(f"{base_url}/metrics", timeout=10.0, trust_env=False)
    metrics.raise_for_status()
    return counter_total(metrics.text, MAPPED_TOTAL)


def mapped_by_replica(stack: Stack) -> list[float]:
    """:func:`mapped_total` of each pipeline replica of ``stack``, replica 0 first."""
    return [
        mapped_total(stack.replica_url("pipeline", index)) for index in range(stack.config.replicas)
    ]


def mapped_since(
    stack: Stack, before: Sequence[float], expected: int, within_seconds: float = 10.0
) -> list[int]:
    """What each pipeline replica mapped since ``before`` (its :func:`mapped_by_replica`),
    once they add up to at least ``expected`` (a worker counts a batch just after its
    commit) or ``within_seconds`` passed."""
    deadline = time.monotonic() + within_seconds
    while True:
        counts = [
            int(now - then) for now, then in zip(mapped_by_replica(stack), before, strict=True)
        ]
        if sum(counts) >= expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def kill_hard(process: ManagedProcess) -> int | None:
    """SIGKILL the whole process group of ``process`` (a crash: nothing is flushed or
    rolled back by the process itself); its exit code once it is gone."""
    assert process.pid is not None, f"{process.name} was never started"
    os.killpg(process.pid, signal.SIGKILL)
    return process.stop(timeout=10.0)


class PipelineDatabase:
    """A stack's pipeline database, read directly (SQLite file or PostgreSQL)."""

    def __init__(self, stack: Stack) -> None:
        self.url = stack.service_env()[database_env_var("pipeline")]

    def rows(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        """The rows of one SQL query (bound ``params``), in a connection of its own."""

        async def read() -> list[tuple[Any, ...]]:
            engine = create_async_engine(self.url)
            try:
                async with engine.connect() as connection:
                    result = await connection.execute(text(query), params)
                    return [tuple(row) for row in result]
            finally:
                await engine.dispose()

        return asyncio.run(read())

    def scalar(self, query: str, **params: Any) -> Any:
        return self.rows(query, **params)[0][0]

    def pending(self) -> int:
        """Deliveries stored and not mapped yet (every delivery, not only a test's)."""
        return int(self.scalar("SELECT count(*) FROM deliveries WHERE result = 'pending'"))

    def wait_drained(self, within_seconds: float, *, interval: float = 0.25) -> float:
        """Seconds until no delivery is pending; AssertionError after ``within_seconds``."""
        started = time.monotonic()
        while (left := self.pending()) > 0:
            waited = time.monotonic() - started
            if waited > within_seconds:
                raise AssertionError(f"{left} deliveries still pending after {waited:.0f} s")
            time.sleep(interval)
        return time.monotonic() - started

    def results(self, delivery_id_prefix: str) -> dict[str, str]:
        """The stored result (pending, processed, ...) of each delivery whose id starts
        with ``delivery_id_prefix``."""
        rows = self.rows(
            "SELECT delivery_id, result FROM deliveries WHERE delivery_id LIKE :pattern",
            pattern=f"{delivery_id_prefix}%",
        )
        return dict(rows)

    def runs(self, repository: str) -> list[tuple[Any, ...]]:
        """``(run_id, run_attempt, status, conclusion, duration_seconds)`` of every run of
        ``repository``, a row each (a run stored twice would show twice)."""
        return self.rows(
            "SELECT run_id, run_attempt, status, conclusion, duration_seconds FROM runs "
            "WHERE repository = :repository ORDER BY run_id",
            repository=repository,
        )

    def logged_deliveries(self, repository: str) -> list[str]:
        """The delivery id of every log line of ``repository``'s runs (one per mapped
        delivery; a line without a delivery shows as ``""``), sorted."""
        rows = self.rows(
            "SELECT l.delivery_id FROM log_lines l JOIN runs r ON r.id = l.run_pk "
            "WHERE r.repository = :repository",
            repository=repository,
        )
        return sorted(delivery_id or "" for (delivery_id,) in rows)

    def assert_rollups_consistent(self, cwd: Path) -> None:
        """Run ``flightdeck-pipeline rebuild-rollups --check`` on this database (in ``cwd``)
        and assert it exits 0: the stored rollups equal a recomputation from ``runs``."""
        checked = run_service_cli(
            "pipeline",
            "rebuild-rollups",
            "--check",
            env={database_env_var("pipeline"): self.url},
            cwd=cwd,
        )
        assert checked.returncode == 0, f"rollups differ: {checked.stdout}{checked.stderr}"
