"""SSE fan-out load generator, run in its own process: many clients on the live event
stream, signed webhooks at a fixed rate, every resulting event accounted for.

It opens ``--clients`` connections to the event stream (raw HTTP/1.1 over asyncio streams,
chunked transfer decoding, no client library: the client's CPU stays low) and waits until
each has its first message. Then it sends unique signed ``workflow_run`` deliveries (the
bodies of ``bench.webhook_load``) at ``--rate`` per second, open loop, first for the
warm-up, then for the measured ``--duration``, and waits (up to a grace period) for the
events of the measured deliveries. Each ``run.updated`` event is matched to its delivery by
the run id in its data. Prints one ``BENCH_JSON {...}`` line: events expected (acknowledged
deliveries x connected clients), delivered, missing, duplicates, events per second, the
latency from the delivery's acknowledgement (and from its sending) to each receipt, the
deliveries' statuses, failed and dropped connections, and its own CPU time.

    BENCH_WEBHOOK_SECRET=... BENCH_TOKEN=... python -m bench.sse_fanout \
        --events-url http://127.0.0.1:18080/pipelines/events \
        --webhook-url http://127.0.0.1:18080/pipelines/webhooks/github \
        --repository bench/sse --run-id-base 93000000000 --delivery-prefix bench-sse
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from typing import Any
from urllib.parse import urlsplit

from bench.report import fanout_summary, percentile
from bench.webhook_load import BodyFactory
from flightdeck_common.testing.webhook_flood import (
    TRANSPORT_ERRORS,
    KeepAliveConnections,
    signed_delivery,
)

RUN_ID = re.compile(rb'"run_id":\s*(\d+)')
RUN_UPDATED = b"event: run.updated"
CONNECT_TIMEOUT_SECONDS = 30.0
GRACE_SECONDS = 10.0
WEBHOOK_TIMEOUT_SECONDS = 30.0

Receipt = tuple[int, int, float]  # (client, run id, received at)


class Fanout:
    """What the clients received, shared by all of them (one event loop, no locks)."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.measure_from = sys.maxsize  # run ids from here on are measured deliveries
        self.measured_receipts = 0
        self.expected = sys.maxsize  # known once the measured deliveries are answered
        self.all_arrived = asyncio.Event()
        self.dropped = 0  # streams that ended before the run did
        self.closing = False

    def count_measured(self) -> None:
        self.measured_receipts += 1
        if self.measured_receipts >= self.expected:
            self.all_arrived.set()

    async def wait_for(self, expected: int) -> None:
        """Until ``expected`` measured events arrived, or for the grace period at most."""
        self.expected = expected
        if self.measured_receipts >= expected:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_arrived.wait(), GRACE_SECONDS)


class Stream:
    """One client of the event stream."""

    def __init__(self, index: int, fanout: Fanout) -> None:
        self.index = index
        self.fanout = fanout
        self.writer: asyncio.StreamWriter | None = None
        self.reading: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def open(self, host: str, port: int, path: str, token: str | None) -> str | None:
        """Connect and read the response head; None when streaming, else why not."""
        try:
            reader, self.writer = await asyncio.open_connection(host, port)
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            self.writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Accept: text/event-stream\r\n{auth}\r\n".encode()
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return type(exc).__name__
        status = head.split(" ", 2)[1]
        if status != "200":
            self.close()
            return f"HTTP {status}"
        self.reading = asyncio.create_task(self._read(reader, "transfer-encoding: chunked" in head))
        return None

    async def _read(self, reader: asyncio.StreamReader, chunked: bool) -> None:
        buffer = b""
        try:
            async for data in _chunks(reader) if chunked else _raw(reader):
                received = time.perf_counter()
                *messages, buffer = (buffer + data).split(b"\n\n")
                for message in messages:
                    self._message(message, received)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        if not self.fanout.closing:
            self.fanout.dropped += 1

    def _message(self, message: bytes, received: float) -> None:
        self.connected.set()  # the first message (retry, id) says the stream is live
        if RUN_UPDATED not in message:
            return
        match = RUN_ID.search(message)
        if match is None:
            return
        run_id = int(match.group(1))
        self.fanout.receipts.append((self.index, run_id, received))
        if run_id >= self.fanout.measure_from:
            self.fanout.count_measured()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The data of a chunked body, chunk by chunk."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return
        yield (await reader.readexactly(size + 2))[:-2]


async def _raw(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while data := await reader.read(65536):
        yield data


class Webhooks:
    """Signed unique deliveries over keep-alive connections (an idle one is reused, else
    one is opened), recording when each measured one was sent and acknowledged."""

    def __init__(self, args: argparse.Namespace, secret: bytes) -> None:
        url = urlsplit(args.webhook_url)
        self.host, self.port, self.path = url.hostname or "127.0.0.1", url.port or 80, url.path
        self.secret = secret
        self.prefix = args.delivery_prefix
        self.bodies = BodyFactory(args.repository)
        self.next_run_id: int = args.run_id_base
        self.connections = KeepAliveConnections(self.host, self.port, WEBHOOK_TIMEOUT_SECONDS)
        self.measured: dict[int, tuple[float, float]] = {}  # run id -> (sent, acknowledged)
        self.ack_ms: list[float] = []
        self.statuses: Counter[str] = Counter()

    async def deliver(self, run_id: int, measured: bool) -> None:
        data = signed_delivery(
            self.host, self.port, self.path, self.secret, self.bodies.body(run_id),
            f"{self.prefix}-{run_id}", "bench-sse",
        )  # fmt: skip
        sent = time.perf_counter()
        try:
            status, _, _ = await self.connections.exchange(data)
        except TRANSPORT_ERRORS as exc:
            self.statuses[type(exc).__name__] += 1
            return
        acked = time.perf_counter()
        self.statuses[str(status)] += 1
        if measured and 200 <= status < 300:
            self.measured[run_id] = (sent, acked)
            self.ack_ms.append((acked - sent) * 1000)

    async def send(self, rate: float, seconds: float, measured: bool) -> None:
        """Deliveries at ``rate`` per second for ``seconds``, each on its schedule however
        slow the answers are (open loop); returns once all are answered."""
        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        for index in range(round(rate * seconds)):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            tasks.append(asyncio.create_task(self.deliver(self.next_run_id, measured)))
            self.next_run_id += 1
        await asyncio.gather(*tasks)

    def close(self) -> None:
        self.connections.close()


async def connect_all(
    streams: list[Stream], url: str, token: str | None
) -> tuple[float, Counter[str]]:
    """Open every stream and wait for its first message: (seconds taken, failures)."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    started = time.perf_counter()
    failures: Counter[str] = Counter()
    errors = await asyncio.gather(*(s.open(host, port, path, token) for s in streams))
    failures.update(error for error in errors if error is not None)
    opened = [s for s, error in zip(streams, errors, strict=True) if error is None]
    waits = [asyncio.wait_for(s.connected.wait(), CONNECT_TIMEOUT_SECONDS) for s in opened]
    for result in await asyncio.gather(*waits, return_exceptions=True):
        if isinstance(result, BaseException):
            failures["no first message"] += 1
    return time.perf_counter() - started, failures


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace, secret: bytes, token: str | None) -> dict[str, Any]:
    fanout = Fanout()
    streams = [Stream(index, fanout) for index in range(args.clients)]
    webhooks = Webhooks(args, secret)
    connect_seconds, failures = await connect_all(streams, args.events_url, token)
    connected = sum(1 for s in streams if s.connected.is_set())
    await webhooks.send(args.rate, args.warmup, measured=False)
    fanout.measure_from = webhooks.next_run_id
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    await webhooks.send(args.rate, args.duration, measured=True)
    sent_for = time.perf_counter() - started
    await fanout.wait_for(len(webhooks.measured) * connected)
    cpu = _cpu_seconds() - cpu_before
    fanout.closing = True
    for stream in streams:
        stream.close()
    webhooks.close()
    summary = fanout_summary(webhooks.measured, fanout.receipts, connected)
    last = max((r for _, run_id, r in fanout.receipts if run_id in webhooks.measured), default=0)
    seconds = max(sent_for, last - started)
    return {
        "clients": args.clients,
        "connected": connected,
        "failed_connections": args.clients - connected,
        "connect_failures": dict(failures),
        "connect_seconds": connect_seconds,
        "dropped": fanout.dropped,
        "rate": args.rate,
        "measured_deliveries": len(webhooks.measured),
        "statuses": dict(sorted(webhooks.statuses.items())),
        "expected": summary.expected,
        "delivered": summary.delivered,
        "missing": summary.missing,
        "duplicates": summary.duplicates,
        "seconds": seconds,
        "p50_ms": percentile(summary.from_ack_ms, 50),
        "p99_ms": percentile(summary.from_ack_ms, 99),
        "send_p50_ms": percentile(summary.from_send_ms, 50),
        "send_p99_ms": percentile(summary.from_send_ms, 99),
        "ack_p50_ms": percentile(webhooks.ack_ms, 50),
        "ack_p99_ms": percentile(webhooks.ack_ms, 99),
        "client_cpu_seconds": cpu,
    }


def _runner() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sse_fanout")
    parser.add_argument("--events-url", required=True)
    parser.add_argument("--webhook-url", required=True)
    parser.add_argument("--secret-env", default="BENCH_WEBHOOK_SECRET")
    parser.add_argument("--token-env", default="BENCH_TOKEN", help="bearer token (if set)")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--run-id-base", type=int, required=True)
    parser.add_argument("--delivery-prefix", required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="webhooks per second")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    secret = os.environ.get(args.secret_env)
    if not secret:
        parser.error(f"set the webhook secret in ${args.secret_env}")
    main_coroutine: Coroutine[Any, Any, dict[str, Any]] = run(
        args, secret.encode(), os.environ.get(args.token_env)
    )
    result = _runner()(main_coroutine)
    print("BENCH_JSON " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
