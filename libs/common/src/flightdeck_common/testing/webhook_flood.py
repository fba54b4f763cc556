"""Signed ``workflow_run`` deliveries at a fixed rate (open loop) or concurrency (closed loop).

Run in a process of its own (``python -m flightdeck_common.testing.webhook_flood``) so the
client's CPU and event loop do not distort what the test process measures meanwhile. Each
delivery is the pipeline's ``requested`` fixture with a unique run id and delivery id,
signed like GitHub signs. Open loop sends each delivery on its schedule, however slow the
answers to the earlier ones are (that is what overload looks like from GitHub's side).
Writes one JSON document: statuses, problem codes, the acknowledgements' results,
acknowledged run ids, latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FIXTURE = "services/pipeline/tests/fixtures/github/workflow_run/requested.payload.json"
_RUN_ID_MARK = "777777777777777"


class Flood:
    """Deliveries over raw HTTP/1.1 keep-alive connections (a client library would cost
    the machine more CPU than the service it loads): an idle connection is reused, a new
    one opened when none is idle, so the number in flight follows the answers' latency."""

    def __init__(self, args: argparse.Namespace) -> None:
        payload = json.loads((Path(args.repo_root) / FIXTURE).read_bytes())
        payload["workflow_run"]["id"] = int(_RUN_ID_MARK)
        payload["repository"]["full_name"] = args.repository
        before, after = json.dumps(payload).split(_RUN_ID_MARK, 1)
        self.before, self.after = before.encode(), after.encode()
        self.secret = os.environ[args.secret_env].encode()
        url = urlsplit(args.url)
        self.host, self.port, self.path = url.hostname or "127.0.0.1", url.port or 80, url.path
        self.next_run_id = args.run_id_base
        self.connections = KeepAliveConnections(self.host, self.port, args.timeout)
        self.statuses: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.results: Counter[str] = Counter()  # ``result`` of the 2xx answers (accepted, ...)
        self.acknowledged: list[int] = []
        self.latencies: list[float] = []

    def request(self, run_id: int) -> bytes:
        body = b"%s%d%s" % (self.before, run_id, self.after)
        return signed_delivery(
            self.host, self.port, self.path, self.secret, body, str(uuid.uuid4()), "flood"
        )

    async def deliver(self) -> None:
        run_id = self.next_run_id
        self.next_run_id += 1
        data = self.request(run_id)
        began = time.monotonic()
        try:
            status, headers, body = await self.connections.exchange(data)
        except TRANSPORT_ERRORS as exc:
            self.statuses[type(exc).__name__] += 1
            return
        self.latencies.append(time.monotonic() - began)
        self.statuses[str(status)] += 1
        if 200 <= status < 300:
            self.acknowledged.append(run_id)
            self.results[str(json.loads(body).get("result"))] += 1
        elif headers.get("content-type", "").startswith("application/problem+json"):
            self.codes[str(json.loads(body).get("code"))] += 1

    def close(self) -> None:
        self.connections.close()


# What a raw exchange raises when the connection or the answer fails.
TRANSPORT_ERRORS = (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError)


class KeepAliveConnections:
    """Raw HTTP/1.1 exchanges with one server over kept-alive connections: an idle one is
    reused, else a new one opened; a connection the server closes (or that fails) is
    dropped."""

    def __init__(self, host: str, port: int, timeout_seconds: float) -> None:
        self.host, self.port, self.timeout_seconds = host, port, timeout_seconds
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def exchange(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its answer (status, headers, body) within the timeout;
        raises one of ``TRANSPORT_ERRORS`` when the connection or the answer fails."""
        connection = None
        try:
            async with asyncio.timeout(self.timeout_seconds):
                connection = self.idle.pop() if self.idle else None
                if connection is None:
                    connection = await asyncio.open_connection(self.host, self.port)
                reader, writer = connection
                writer.write(data)
                status, headers, body = await read_response(reader)
        except TRANSPORT_ERRORS:
            if connection is not None:
                connection[1].close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append(connection)
        return status, headers, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def signed_delivery(
    host: str, port: int, path: str, secret: bytes, body: bytes, delivery_id: str, agent: str
) -> bytes:
    """One ``workflow_run`` delivery as GitHub sends it (HTTP/1.1, HMAC-SHA256 signed)."""
    signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"User-Agent: GitHub-Hookshot/{agent}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-GitHub-Event: workflow_run\r\n"
        f"X-GitHub-Delivery: {delivery_id}\r\n"
        f"X-Hub-Signature-256: sha256={signature}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response: status, headers (lower-case names) and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunks.append((await reader.readexactly(size + 2))[:-2])
            if size == 0:
                return status, headers, b"".join(chunks)
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    flood = Flood(args)
    started = time.monotonic()
    if args.rate:
        sends: list[asyncio.Task[None]] = []
        total = int(args.rate * args.seconds)
        for index in range(total):
            delay = started + index / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(asyncio.create_task(flood.deliver()))
        sent_for = time.monotonic() - started
        await asyncio.gather(*sends)
    else:
        deadline = started + args.seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                await flood.deliver()

        await asyncio.gather(*(worker() for _ in range(args.workers)))
        sent_for = time.monotonic() - started
    elapsed = time.monotonic() - started
    flood.close()
    sent = sum(flood.statuses.values())
    return {
        "sent": sent,
        "offered_per_s": sent / sent_for,
        "elapsed_s": elapsed,
        "acknowledged_per_s": len(flood.acknowledged) / elapsed,
        "statuses": dict(flood.statuses),
        "problem_codes": dict(flood.codes),
        "results": dict(flood.results),
        "acknowledged": flood.acknowledged,
        "latencies": flood.latencies,
        "cpu_s": time.process_time(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flightdeck_common.testing.webhook_flood")
    parser.add_argument("--url", required=True, help="the webhook route, e.g. through the ingress")
    parser.add_argument("--secret-env", required=True, help="variable holding the signing secret")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--run-id-base", type=int, required=True)
    parser.add_argument("--repo-root", required=True, help="where the GitHub fixtures are")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: deliveries per second")
    parser.add_argument("--workers", type=int, default=8, help="closed loop (no --rate): senders")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--out", required=True, help="JSON file written at the end")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
