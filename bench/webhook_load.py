"""Load generator for signed GitHub ``workflow_run`` deliveries, run in its own process.

wrk cannot sign bodies (no HMAC in its Lua), so this async generator does: each request is
a real-sized payload from the pipeline's fixtures with a unique run id and a unique
``X-GitHub-Delivery``, signed ``X-Hub-Signature-256`` like GitHub does. It speaks
HTTP/1.1 keep-alive over raw asyncio streams (no client library overhead), runs a warm-up
then the measured phase at fixed concurrency (each connection sends as soon as the previous
answer came, or paced to ``--rate`` deliveries per second in all), and prints one JSON line
with what it measured, the status counts, and its own CPU time.

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
from flightdeck_common.testing.webhook_flood import read_response, signed_delivery

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
        self.measuring = False
        self.stop_at = 0.0
        self.interval = 0.0  # seconds between one connection's deliveries (0: no pacing)
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.measured_statuses: Counter[int] = Counter()
        self.transport_errors = 0
        self.sent = 0
        self.acked = 0

    def request(self) -> bytes:
        run_id = next(self.run_ids)
        delivery_id = f"{self.prefix}-{run_id}"
        body = self.bodies.body(run_id)
        return signed_delivery(
            self.host, self.port, self.path, self.secret, body, delivery_id, "bench"
        )

    async def worker(self) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        next_send = time.monotonic()
        while time.monotonic() < self.stop_at:
            if self.interval:
                await asyncio.sleep(max(0.0, next_send - time.monotonic()))
                next_send += self.interval
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                assert reader is not None
                data = self.request()
                measuring = self.measuring
                started = time.perf_counter()
                self.sent += 1
                writer.write(data)
                status, headers, _ = await read_response(reader)
                keep_alive = headers.get("connection", "").lower() != "close"
                elapsed = time.perf_counter() - started
                self.statuses[status] += 1
                if 200 <= status < 300:
                    self.acked += 1
                if measuring and self.measuring:
                    self.latencies.append(elapsed)
                    self.measured_statuses[status] += 1
                if not keep_alive:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                self.transport_errors += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.05)
        if writer is not None:
            writer.close()

    async def run(
        self, warmup: float, duration: float, connections: int, rate: float = 0.0
    ) -> dict[str, object]:
        self.stop_at = time.monotonic() + warmup + duration
        self.interval = connections / rate if rate > 0 else 0.0
        workers = [asyncio.create_task(self.worker()) for _ in range(connections)]
        await asyncio.sleep(warmup)
        self.measuring = True
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        await asyncio.sleep(duration)
        self.measuring = False
        seconds = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*workers)
        measured = len(self.latencies)
        p50 = percentile(self.latencies, 50)
        p99 = percentile(self.latencies, 99)
        return {
            "requests": measured,
            "seconds": seconds,
            "p50_ms": p50 * 1000 if p50 is not None else None,
            "p99_ms": p99 * 1000 if p99 is not None else None,
            "errors": sum(n for s, n in self.measured_statuses.items() if s >= 400),
            "client_cpu_seconds": (cpu_after.ru_utime - cpu_before.ru_utime)
            + (cpu_after.ru_stime - cpu_before.ru_stime),
            "sent": self.sent,
            "acked": self.acked,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": self.transport_errors,
        }


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
    result = runner(load.run(args.warmup, args.duration, args.connections, args.rate))
    print("BENCH_JSON " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
