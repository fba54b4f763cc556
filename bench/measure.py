"""Load runs against one target (the stack or the bare reference), one function per kind of
scenario: wrk (one request, a weighted mix, or one under a background load), the signed
webhooks (``bench.webhook_load``: for a duration, or a burst of a fixed number; against the
stack each followed by the mapping drain, ``bench.drain``) and the SSE fan-out
(``bench.sse_fanout``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx

from bench.context import REPO_ROOT, Context, Outcome, Scenario, Target, fetch
from bench.drain import Drain, DrainWatch, drain_cell, drain_note
from bench.report import Measurement, format_count
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
    "burst-stack": 95_000_000_000,
    "burst-bare": 96_000_000_000,
}
# The background load runs this much longer than the measured scenario's warm-up + run.
BACKGROUND_MARGIN_SECONDS = 3.0
GENERATOR_TIMEOUT_MARGIN = 120.0
# How long the mapping behind the acknowledgement may take once the sender is done (the
# drain is measured, this only bounds the wait), and how long a run waits for what an
# earlier one left pending.
DRAIN_WAIT_SECONDS = 900.0
PENDING_WAIT_SECONDS = 300.0
# A burst's answers each within this (the sender's --timeout; a timeout counts as refused).
BURST_ANSWER_TIMEOUT_SECONDS = 60.0
SLOWEST_BURST_RATE = 20.0  # acceptances/s below which the sender is given up (a bound)


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


def pipeline_metrics_url(ctx: Context) -> str:
    """The pipeline replica's own ``/metrics`` (not routed by the ingress)."""
    return ctx.stack.service_url("pipeline") + "/metrics"


def wait_for_no_pending(ctx: Context) -> str | None:
    """Wait until no delivery is pending (what an earlier scenario left is mapped), so
    the mapped counter grows by this run's deliveries only; a warning when it does not."""
    deadline = time.monotonic() + PENDING_WAIT_SECONDS
    while True:
        pending = fetch(ctx, "SELECT count(*) AS n FROM deliveries WHERE result = 'pending'")
        if pending[0]["n"] == 0:
            return None
        if time.monotonic() > deadline:
            return (
                f"WARNING: {pending[0]['n']} deliveries still pending after "
                f"{PENDING_WAIT_SECONDS:g} s before this run; its drain counts them too"
            )
        time.sleep(0.5)


@dataclass(frozen=True)
class WebhookRun:
    """What one sender run gave: the generator's JSON, the mapping drain (the stack:
    mapped behind the 202; None for the bare reference, which maps before answering),
    what the database holds of the sender's deliveries, and the notes."""

    result: dict[str, Any]
    drain: Drain | None
    stored: int  # deliveries stored under the sender's prefix
    pending: int  # of which still pending
    mapped: int  # runs of the sender's repository
    warning: str | None
    context: str  # the machine's load when the run began; the /metrics reads

    @property
    def lost(self) -> int:
        """Acknowledged deliveries with no run (or still unmapped when the wait ended)."""
        return max(0, int(self.result["acked"]) - self.mapped)

    def note(self, label: str) -> str:
        result = self.result
        kinds = result.get("transport_error_kinds") or {}
        lines = [
            f"webhook ({label}): {result['sent']:,} sent, {result['acked']:,} acknowledged "
            f"2xx, {self.stored:,} deliveries stored ({self.pending:,} pending), "
            f"{self.mapped:,} runs stored -> lost: {self.lost}; statuses {result['statuses']}, "
            f"transport errors {result['transport_errors']}{f' {kinds}' if kinds else ''}; "
            f"generator CPU {result['client_cpu_seconds']:.1f} s over {result['seconds']:.1f} s",
        ]
        if self.drain is not None:
            lines.append(drain_note(self.drain))
        first_refused = result.get("first_refused_monotonic")
        first_send = result.get("first_send_monotonic")
        if first_refused is not None and first_send is not None:
            lines.append(
                f"refusals from {first_refused - first_send:.2f} s to "
                f"{result['last_refused_monotonic'] - first_send:.2f} s after the first send"
            )
        lines.append(self.context)
        if self.warning is not None:
            lines.append(self.warning)
        return "; ".join(lines)


def send_webhooks(
    ctx: Context, label: str, generator_args: list[str], *, timeout: float,
    metrics_url: str | None,
) -> WebhookRun:  # fmt: skip
    """``bench.webhook_load`` as ``label`` with ``generator_args``; with ``metrics_url``
    (the stack: mapping behind the acknowledgement) the pipeline's counters are followed
    from before the first send until every acknowledged delivery is mapped."""
    env = {"BENCH_WEBHOOK_SECRET": ctx.webhook_secret}
    args = [*webhook_identity(label), *generator_args]
    warning = None
    drain = None
    if metrics_url is None:
        context = _load_average()
        result = run_generator("bench.webhook_load", args, env, timeout)
        time.sleep(1.0)  # let the last transactions commit
    else:
        warning = wait_for_no_pending(ctx)
        context = _load_average()
        with DrainWatch(metrics_url) as watch:
            result = run_generator("bench.webhook_load", args, env, timeout)
            watch.wait_for(result["acked"], DRAIN_WAIT_SECONDS)
        first = result["first_send_monotonic"] or watch.samples[0].at
        last = result["last_answer_monotonic"] or first
        drain = watch.summary(result["acked"], first, last)
        context = f"{context}; {watch.cost_note()}"
        if watch.failures:
            warning = f"{watch.failures} failed reads of {metrics_url}"
    stored = fetch(
        ctx,
        "SELECT count(*) FILTER (WHERE result = 'pending') AS pending, count(*) AS raw "
        "FROM deliveries WHERE delivery_id LIKE $1",
        f"bench-{label}-%",
    )[0]
    repository = f"bench/{label}-webhooks"
    mapped = fetch(ctx, "SELECT count(*) AS n FROM runs WHERE repository = $1", repository)[0]
    return WebhookRun(
        result, drain, stored["raw"], stored["pending"], mapped["n"], warning, context
    )


def _load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) at the start"


def webhook_run(
    ctx: Context, url: str, label: str, *, connections: int, warmup: float, duration: float,
    rate: float = 0.0, metrics_url: str | None = None,
) -> tuple[Measurement, WebhookRun]:  # fmt: skip
    """Signed deliveries to ``url`` for ``warmup`` + ``duration`` seconds; the measurement
    (rps: deliveries acknowledged 2xx per second, which for the stack means stored and
    answered 202 ``accepted``; errors: 4xx/5xx answers + acknowledged deliveries not mapped
    to a run) and the run, whose note checks every one was stored and mapped."""
    args = [
        "--url", url, "--connections", str(connections),
        "--warmup", str(warmup), "--duration", str(duration), "--rate", str(rate),
    ]  # fmt: skip
    timeout = warmup + duration + GENERATOR_TIMEOUT_MARGIN
    run = send_webhooks(ctx, label, args, timeout=timeout, metrics_url=metrics_url)
    result = run.result
    measurement = Measurement(
        requests=result["requests"] - result["errors"],
        seconds=result["seconds"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=result["errors"] + run.lost,
        client_cpu_seconds=result["client_cpu_seconds"],
    )
    return measurement, run


def _metrics_url(ctx: Context, target: Target) -> str | None:
    return pipeline_metrics_url(ctx) if target.name == "stack" else None


def _mapping_cell(run: WebhookRun) -> str:
    return drain_cell(run.drain) if run.drain is not None else "mapped before the answer"


def webhook_measure(ctx: Context, scenario: Scenario, target: Target) -> Outcome:
    measurement, run = webhook_run(
        ctx,
        target.base_url + target.path(scenario),
        target.name,
        connections=connections(ctx, scenario),
        warmup=ctx.mode.warmup,
        duration=ctx.mode.duration,
        metrics_url=_metrics_url(ctx, target),
    )
    ctx.notes.append(run.note(target.name))
    return Outcome(measurement, rows=f"{scenario.rows}; {_mapping_cell(run)}")


def webhook_burst_measure(ctx: Context, scenario: Scenario, target: Target) -> Outcome:
    """``ctx.mode.burst`` deliveries at once from ``scenario.connections`` connections:
    rps = deliveries answered 202 per second (first send -> last answer), p50/p99 of every
    answer, errors = refused (any answer but 202, timeouts, socket errors) + lost; the
    rows cell says when the last was mapped, from the first send."""
    label = f"burst-{target.name}"
    count = ctx.mode.burst
    args = [
        "--url", target.base_url + target.path(scenario), "--count", str(count),
        "--connections", str(connections(ctx, scenario)),
        "--timeout", str(BURST_ANSWER_TIMEOUT_SECONDS),
    ]  # fmt: skip
    timeout = count / SLOWEST_BURST_RATE + GENERATOR_TIMEOUT_MARGIN
    run = send_webhooks(ctx, label, args, timeout=timeout, metrics_url=_metrics_url(ctx, target))
    result = run.result
    accepted = int(result["statuses"].get("202", 0))
    refused = count - accepted
    ctx.notes.append(
        f"webhook burst ({target.name}): {count:,} deliveries from "
        f"{connections(ctx, scenario)} connections in {result['seconds']:.1f} s: {accepted:,} "
        f"accepted 202 ({accepted / result['seconds'] if result['seconds'] else 0:,.0f}/s), "
        f"{refused} refused; " + run.note(label)
    )
    measurement = Measurement(
        requests=accepted,
        seconds=result["seconds"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=refused + run.lost,
        client_cpu_seconds=result["client_cpu_seconds"],
    )
    return Outcome(measurement, rows=f"{format_count(count)} at once; {_mapping_cell(run)}")


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
