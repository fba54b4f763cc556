"""Load runs against one target (the stack or the bare reference), one function per kind of
scenario: wrk (one request, a weighted mix, or one under a background load), the signed
webhooks (``bench.webhook_load``) and the SSE fan-out (``bench.sse_fanout``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx

from bench.context import REPO_ROOT, WEBHOOK_CONNECTIONS, Context, Outcome, Scenario, Target, fetch
from bench.report import Measurement
from bench.wrk import run_wrk
from bench.wrk_script import Request

# Run ids (and repositories, delivery id prefixes) of each webhook sender: apart, so each
# one's deliveries and runs can be counted.
RUN_ID_BASES = {
    "stack": 90_000_000_000,
    "bare": 91_000_000_000,
    "soak": 92_000_000_000,
    "sse-stack": 93_000_000_000,
    "sse-bare": 94_000_000_000,
}
# The background load runs this much longer than the measured scenario's warm-up + run.
BACKGROUND_MARGIN_SECONDS = 3.0
GENERATOR_TIMEOUT_MARGIN = 120.0


def connections(ctx: Context, scenario: Scenario) -> int:
    return scenario.connections or ctx.args.connections


def _headers(scenario: Scenario, token: str | None) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    if token is not None and scenario.authenticated:
        headers.append(("Authorization", f"Bearer {token}"))
    if scenario.body is not None:
        headers.append(("Content-Type", "application/json"))
    return tuple(headers)


def wrk_requests(scenario: Scenario, target: Target) -> list[Request]:
    """What wrk sends for ``scenario``: its request, or its mix's, weighted."""
    parts = scenario.mix or ((scenario, 1),)
    return [
        Request(
            path=target.path(part),
            method=part.method,
            body=part.body,
            headers=_headers(part, target.token),
            id_max=part.id_max,
            weight=weight,
        )
        for part, weight in parts
    ]


def wrk_run(ctx: Context, scenario: Scenario, target: Target, seconds: float) -> Measurement:
    return run_wrk(
        target.base_url,
        wrk_requests(scenario, target),
        seconds=seconds,
        connections=connections(ctx, scenario),
        threads=ctx.args.threads,
        script_path=ctx.var_dir / "wrk" / f"{scenario.key}.lua",
        pause_ms=scenario.pause_ms,
    )


def drain(scenario: Scenario, target: Target) -> None:
    """Requests wrk left in flight keep the server busy (an argon2 hash is not cancelled):
    one more request of the same kind returns once that backlog has drained."""
    request = wrk_requests(scenario, target)[0]
    httpx.request(
        request.method,
        target.base_url + request.path.replace("{id}", "1"),
        headers=dict(request.headers),
        content=request.body,
        timeout=300,
    )


def wrk_measure(ctx: Context, scenario: Scenario, target: Target) -> Outcome:
    """Warm-up, drain, measured run; under ``scenario.background`` when it has one."""
    if scenario.background is not None:
        return _under_background(ctx, scenario, scenario.background, target)
    wrk_run(ctx, scenario, target, ctx.mode.warmup)
    drain(scenario, target)
    return Outcome(wrk_run(ctx, scenario, target, ctx.mode.duration))


def _under_background(
    ctx: Context, scenario: Scenario, background: Scenario, target: Target
) -> Outcome:
    """``scenario`` measured (warm-up included) while a second wrk loads ``background``,
    started first and ending after it; the background's rate goes into the rows cell."""
    seconds = 2 * ctx.mode.warmup + ctx.mode.duration + BACKGROUND_MARGIN_SECONDS
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(wrk_run, ctx, background, target, seconds)
        time.sleep(ctx.mode.warmup)  # the background's ramp-up
        outcome = wrk_measure(ctx, replace(scenario, background=None), target)
        load = loading.result()
    drain(background, target)
    ctx.notes.append(
        f"{scenario.name} ({target.name}): {background.name} meanwhile at "
        f"{connections(ctx, background)} connections: {load.rps:.1f}/s over {load.seconds:.0f} s, "
        f"p50 {load.p50_ms or 0:.0f} ms, p99 {load.p99_ms or 0:.0f} ms, errors {load.errors}"
    )
    rows = f"{background.name} {load.rps:.1f}/s, {connections(ctx, background)} conns"
    return Outcome(outcome.measurement, rows=rows)


def run_generator(module: str, args: list[str], env: dict[str, str], timeout: float) -> Any:
    """Run a load generator (``python -m <module> ...``) and return its ``BENCH_JSON``."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    line = next((x for x in completed.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"{module} failed: {completed.stderr.strip()[-2000:]}")
    return json.loads(line.removeprefix("BENCH_JSON "))


def webhook_identity(label: str) -> list[str]:
    """The ``--repository``, ``--run-id-base`` and ``--delivery-prefix`` of a sender."""
    return [
        "--repository", f"bench/{label}-webhooks",
        "--run-id-base", str(RUN_ID_BASES[label]),
        "--delivery-prefix", f"bench-{label}",
    ]  # fmt: skip


def webhook_run(
    ctx: Context, url: str, label: str, *, connections: int, warmup: float, duration: float,
    rate: float = 0.0,
) -> tuple[Measurement, str]:  # fmt: skip
    """Signed deliveries to ``url``; the measurement and a note checking every acknowledged
    delivery was stored and mapped to a run."""
    args = [
        "--url", url, *webhook_identity(label), "--connections", str(connections),
        "--warmup", str(warmup), "--duration", str(duration), "--rate", str(rate),
    ]  # fmt: skip
    env = {"BENCH_WEBHOOK_SECRET": ctx.webhook_secret}
    timeout = warmup + duration + GENERATOR_TIMEOUT_MARGIN
    result = run_generator("bench.webhook_load", args, env, timeout)
    time.sleep(1.0)  # let the last transactions commit
    stored = fetch(
        ctx,
        "SELECT count(*) FILTER (WHERE result = 'processed') AS processed, count(*) AS raw "
        "FROM deliveries WHERE delivery_id LIKE $1",
        f"bench-{label}-%",
    )[0]
    repository = f"bench/{label}-webhooks"
    mapped = fetch(ctx, "SELECT count(*) AS n FROM runs WHERE repository = $1", repository)[0]
    lost = result["acked"] - mapped["n"]
    note = (
        f"webhook ({label}): {result['sent']} sent (warm-up included), {result['acked']} "
        f"acknowledged 2xx, {stored['raw']} deliveries stored ({stored['processed']} "
        f"processed), {mapped['n']} runs stored -> lost: {lost}; statuses {result['statuses']}, "
        f"transport errors {result['transport_errors']}; generator CPU "
        f"{result['client_cpu_seconds']:.1f} s over {result['seconds']:.1f} s"
    )
    measurement = Measurement(
        requests=result["requests"] - result["errors"],
        seconds=result["seconds"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=result["errors"] + max(lost, 0),
        client_cpu_seconds=result["client_cpu_seconds"],
    )
    return measurement, note


def webhook_measure(ctx: Context, scenario: Scenario, target: Target) -> Outcome:
    measurement, note = webhook_run(
        ctx,
        target.base_url + target.path(scenario),
        target.name,
        connections=WEBHOOK_CONNECTIONS,
        warmup=ctx.mode.warmup,
        duration=ctx.mode.duration,
    )
    ctx.notes.append(note)
    return Outcome(measurement)


def sse_measure(ctx: Context, scenario: Scenario, target: Target) -> Outcome:
    """``bench.sse_fanout``: ``scenario``'s clients on its stream, the webhooks of
    ``scenario.background`` at ``--sse-rate``. rps = events delivered per second, p50/p99 =
    from the delivery's acknowledgement to the event's receipt, errors = missing events +
    clients that could not connect or were dropped."""
    assert scenario.background is not None
    args = [
        "--events-url", target.base_url + target.path(scenario),
        "--webhook-url", target.base_url + target.path(scenario.background),
        *webhook_identity(f"sse-{target.name}"),
        "--clients", str(connections(ctx, scenario)), "--rate", str(ctx.args.sse_rate),
        "--warmup", str(ctx.mode.warmup), "--duration", str(ctx.mode.duration),
    ]  # fmt: skip
    env = {"BENCH_WEBHOOK_SECRET": ctx.webhook_secret}
    if target.token is not None:
        env["BENCH_TOKEN"] = target.token
    timeout = ctx.mode.warmup + ctx.mode.duration + GENERATOR_TIMEOUT_MARGIN
    result = run_generator("bench.sse_fanout", args, env, timeout)
    ctx.notes.append(
        f"SSE fan-out ({target.name}): {result['connected']} of {result['clients']} clients "
        f"connected in {result['connect_seconds']:.1f} s (failures "
        f"{result['connect_failures'] or 'none'}), {result['dropped']} dropped; "
        f"{result['measured_deliveries']} measured webhooks acknowledged at {result['rate']:g}/s "
        f"(statuses {result['statuses']}, ack p50 {_ms(result['ack_p50_ms'])} / p99 "
        f"{_ms(result['ack_p99_ms'])}) -> {result['expected']} events expected, "
        f"{result['delivered']} delivered in {result['seconds']:.1f} s, {result['missing']} "
        f"missing, {result['duplicates']} duplicates; latency from the webhook's send p50 "
        f"{_ms(result['send_p50_ms'])} / p99 {_ms(result['send_p99_ms'])}; generator CPU "
        f"{result['client_cpu_seconds']:.1f} s"
    )
    measurement = Measurement(
        requests=result["delivered"],
        seconds=result["seconds"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=result["missing"] + result["failed_connections"] + result["dropped"],
        client_cpu_seconds=result["client_cpu_seconds"],
    )
    return Outcome(measurement)


def _ms(value: float | None) -> str:
    return f"{value:.0f} ms" if value is not None else "-"
