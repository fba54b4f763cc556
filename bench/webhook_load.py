"""Load generator for signed GitHub ``workflow_run`` deliveries, run in its own process.

wrk cannot sign bodies (no HMAC in its Lua), so this async generator does: each request is
a real-sized payload from the pipeline's fixtures with a unique run id and a unique
``X-GitHub-Delivery``, signed ``X-Hub-Signature-256`` like GitHub does. It speaks
HTTP/1.1 keep-alive over raw asyncio streams (``KeepAliveConnections`` of
``flightdeck_common.testing.webhook_flood``: no client library overhead, a timeout per
answer), runs a warm-up then the measured phase at fixed concurrency (each connection sends
as soon as the previous answer came, or paced to ``--rate`` deliveries per second in all),
or with ``--count`` a burst of exactly that many deliveries with every answer measured, and
prints one JSON line with what it measured, the status counts, when the first delivery was
sent and the last answer came (``time.monotonic()``, which the bench's process shares), and
its own CPU time.

    python -m bench.webhook_load --url http://127.0.0.1:18080/pipelines/webhooks/github \
        --secret-env BENCH_WEBHOOK_SECRET --repository bench/stack --run-id-base 90000000000 ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from bench.report import percentile
from flightdeck_common.testing.webhook_flood import (
    TRANSPORT_ERRORS,
    KeepAliveConnections,
    signed_delivery,
)

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "services/pipeline/tests/fixtures/github/workflow_run/completed.payload.json"
)
_RUN_ID_MARK = b"777777777777777"
_RUN_NUMBER_MARK = b"666666666666666"


class BodyFactory:
    """Unique bodies from the fixture: only the run id and run number change."""

    def __init__(self, repository: str) -> None:
        payload = json.loads(FIXTURE.read_bytes())
        run = payload["workflow_run"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        run["id"] = int(_RUN_ID_MARK)
        run["run_number"] = int(_RUN_NUMBER_MARK)
        run["created_at"] = run["run_started_at"] = run["updated_at"] = now
        payload["repository"]["full_name"] = repository
        template = json.dumps(payload, indent=2).encode()
        self._before, rest = template.split(_RUN_ID_MARK, 1)
        self._middle, self._after = rest.split(_RUN_NUMBER_MARK, 1)

    def body(self, run_id: int) -> bytes:
        return b"".join(
            (
                self._before,
                str(run_id).encode(),
                self._middle,
                str(run_id % 1_000_000_000).encode(),  # run_number is a 32-bit column
                self._after,
            )
        )


class Load:
    def __init__(self, args: argparse.Namespace, secret: str) -> None:
        url = urlsplit(args.url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.path = url.path
        self.secret = secret.encode()
        self.prefix = args.delivery_prefix
        self.bodies = BodyFactory(args.repository)
        self.run_ids = itertools.count(args.run_id_base)
        self.connections = KeepAliveConnections(self.host, self.port, args.timeout)
        self.measuring = False
        self.stop_at = 0.0
        self.remaining: int | None = None  # --count: deliveries left to send (None: timed)
        self.interval = 0.0  # seconds between one connection's deliveries (0: no pacing)
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.measured_statuses: Counter[int] = Counter()
        self.transport_errors: Counter[str] = Counter()
        self.sent = 0
        self.acked = 0
        self.first_send: float | None = None  # time.monotonic() (shared by processes)
        self.last_answer: float | None = None
        # When the first and the last answer other than 2xx (or transport error) came.
        self.first_refused: float | None = None
        self.last_refused: float | None = None

    def request(self) -> bytes:
        run_id = next(self.run_ids)
        delivery_id = f"{self.prefix}-{run_id}"
        body = self.bodies.body(run_id)
        return signed_delivery(
            self.host, self.port, self.path, self.secret, body, delivery_id, "bench"
        )

    def _more(self) -> bool:
        """Whether this worker sends another delivery (taking it from ``remaining``)."""
        if self.remaining is None:
            return time.monotonic() < self.stop_at
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    async def worker(self) -> None:
        next_send = time.monotonic()
        while self._more():
            if self.interval:
                await asyncio.sleep(max(0.0, next_send - time.monotonic()))
                next_send += self.interval
            data = self.request()
            measuring = self.measuring
            if self.first_send is None:
                self.first_send = time.monotonic()
            started = time.perf_counter()
            self.sent += 1
            try:
                status, _, _ = await self.connections.exchange(data)
            except (*TRANSPORT_ERRORS, IndexError) as exc:
                self.transport_errors[type(exc).__name__] += 1
                self._refused()
                if self.remaining is None:
                    await asyncio.sleep(0.05)
                continue
            elapsed = time.perf_counter() - started
            self.last_answer = time.monotonic()
            self.statuses[status] += 1
            if 200 <= status < 300:
                self.acked += 1
            else:
                self._refused()
            if measuring and self.measuring:
                self.latencies.append(elapsed)
                self.measured_statuses[status] += 1

    def _refused(self) -> None:
        self.last_refused = time.monotonic()
        if self.first_refused is None:
            self.first_refused = self.last_refused

    def _result(self, seconds: float, cpu_seconds: float) -> dict[str, object]:
        p50 = percentile(self.latencies, 50)
        p99 = percentile(self.latencies, 99)
        return {
            "requests": len(self.latencies),
            "seconds": seconds,
            "p50_ms": p50 * 1000 if p50 is not None else None,
            "p99_ms": p99 * 1000 if p99 is not None else None,
            "errors": sum(n for s, n in self.measured_statuses.items() if s >= 400),
            "client_cpu_seconds": cpu_seconds,
            "sent": self.sent,
            "acked": self.acked,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": sum(self.transport_errors.values()),
            "transport_error_kinds": dict(self.transport_errors),
            "first_send_monotonic": self.first_send,
            "last_answer_monotonic": self.last_answer,
            "first_refused_monotonic": self.first_refused,
            "last_refused_monotonic": self.last_refused,
        }

    async def run(
        self, warmup: float, duration: float, connections: int, rate: float = 0.0
    ) -> dict[str, object]:
        """Warm-up then the measured phase, each connection sending as soon as its previous
        answer came (or paced so that all send ``rate`` per second)."""
        self.stop_at = time.monotonic() + warmup + duration
        self.interval = connections / rate if rate > 0 else 0.0
        workers = [asyncio.create_task(self.worker()) for _ in range(connections)]
        await asyncio.sleep(warmup)
        self.measuring = True
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        await asyncio.sleep(duration)
        self.measuring = False
        seconds = time.perf_counter() - started
        cpu_seconds = _cpu_seconds() - cpu_before
        await asyncio.gather(*workers)
        self.connections.close()
        return self._result(seconds, cpu_seconds)

    async def burst(self, count: int, connections: int) -> dict[str, object]:
        """Exactly ``count`` deliveries, each connection sending as soon as its previous
        answer came, no warm-up: every answer is measured, ``seconds`` runs from the first
        send to the last answer."""
        self.remaining = count
        self.measuring = True
        cpu_before = _cpu_seconds()
        began = time.monotonic()
        await asyncio.gather(*(self.worker() for _ in range(connections)))
        self.connections.close()
        first = self.first_send if self.first_send is not None else began
        last = self.last_answer if self.last_answer is not None else time.monotonic()
        return self._result(last - first, _cpu_seconds() - cpu_before)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret-env", default="BENCH_WEBHOOK_SECRET")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--run-id-base", type=int, required=True)
    parser.add_argument("--delivery-prefix", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="deliveries/s in all (0: max)")
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        help="a burst: exactly this many deliveries as fast as the answers come, no warm-up "
        "(--warmup, --duration and --rate do not apply)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per answer")
    args = parser.parse_args(argv)
    secret = os.environ.get(args.secret_env)
    if not secret:
        parser.error(f"set the webhook secret in ${args.secret_env}")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    else:
        runner = uvloop.run
    load = Load(args, secret)
    if args.count > 0:
        result = runner(load.burst(args.count, args.connections))
    else:
        result = runner(load.run(args.warmup, args.duration, args.connections, args.rate))
    print("BENCH_JSON " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
