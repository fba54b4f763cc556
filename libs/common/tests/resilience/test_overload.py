"""Issue 14, overload: webhook deliveries beyond the mapping capacity are acknowledged at once,
queued durably and mapped afterwards; past the hard backlog bound they are refused.

A full-mode stack of its own (one replica per service, PostgreSQL, Redis, Traefik). Its
pipeline maps one delivery per transaction (``FLIGHTDECK_PIPELINE_WEBHOOK_MAPPING_BATCH_SIZE``
1), which makes mapping the slow step, as it is in production, where a delivery's mapping
(rollups, change events, metrics over a million runs) costs far more than storing it. With
the default batch of 100 on an empty database the worker maps faster than one process on a
2-core machine accepts through Traefik, and four times its rate would load the machine, not
the contract.

1. Mapping capacity, measured through the ingress: a closed-loop burst of unique signed
   ``workflow_run`` deliveries (8 senders, 3 s), then the wait until the worker has mapped
   every one of them (``flightdeck_webhook_mapped_total``). Capacity = the burst's deliveries
   / the time from its first request until its last delivery was mapped: the pace of the
   worker while it shares the process with acceptance, then alone.
2. Deliveries are sent open-loop at four times that rate (each on its schedule, whatever
   happened to the earlier ones, as GitHub sends) for 6 s, from a generator in a process of
   its own, while the pipeline's ``/readyz`` (what Traefik and Kubernetes probe) is polled
   directly and the replica's ``flightdeck_webhook_backlog`` sampled. Asserted: every
   delivery is answered 202 ``accepted`` (no 429, no 503, no 5xx, no timeout), readiness
   stays 200 with a bounded p99, the backlog grows to more than a second of mapping and
   then drains to 0, and each acknowledged delivery is mapped exactly once (the mapped
   counter rose by the number acknowledged) into its run.
3. The bound: the pipeline restarted with ``FLIGHTDECK_PIPELINE_WEBHOOK_BACKLOG_LIMIT`` 50 and
   mapping off, so the backlog cannot drain. The first 50 deliveries are accepted; the
   next are answered 503 ``delivery_backlog_full`` with the configured ``Retry-After`` and
   counted in ``flightdeck_webhook_backlog_refusals_total`` (a ping is still answered).
   Restarted with its usual settings (mapping on), the pipeline maps all 50 acknowledged
   ones; a refused one was never stored, and GitHub's redelivery of it is accepted.

Only generous bounds on time are asserted (the probe p99, waits that fail instead of
hanging); the measured figures are test properties (``-rP`` prints them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.testing.plugin import isolated_full_stack
from flightdeck_common.testing.stack_users import create_user, stored_run_ids, wait_for_run_ids

# A cluster of real processes to start, a minute or two of load and two restarts on a 2-core
# machine that may be running other tests meanwhile: more than the suite's default 120 s.
pytestmark = [pytest.mark.e2e, pytest.mark.resilience, pytest.mark.timeout(360)]

REPO_ROOT = Path(__file__).resolve().parents[4]
FIXTURE = REPO_ROOT / "services/pipeline/tests/fixtures/github/workflow_run/requested.payload.json"
MAPPING_BATCH_SIZE = "1"
CAPACITY_WORKERS = 8
CAPACITY_SECONDS = 3.0
OVERLOAD_FACTOR = 4
OVERLOAD_SECONDS = 6.0
PROBE_INTERVAL = 0.05
SAMPLE_INTERVAL = 0.25  # the backlog gauge (the worker also recounts it every ~2 s)
REQUEST_TIMEOUT = 20.0
# The readiness probe's p99 under overload. Generous for a 2-core machine that also runs
# the load generator and other tests (Traefik's own health check gives up after 3 s).
PROBE_P99_BOUND = 2.0
# Waits that fail rather than hang: the burst maps within seconds, the flood's backlog
# (about 20 s of mapping capacity at most) within a minute even on a busy machine.
BURST_MAPPED_WITHIN = 60.0
DRAIN_WITHIN = 120.0
MAPPED_WITHIN = 30.0
BACKLOG_LIMIT = 50
REFUSED = 10
RETRY_AFTER = "7"
RECOUNT_SECONDS = 2.5  # > the worker's backlog recount interval (2 s)

BacklogSample = tuple[float, float]  # (seconds since the flood began, backlog gauge)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with isolated_full_stack(
        "flightdeck-overload",
        {"FLIGHTDECK_PIPELINE_WEBHOOK_MAPPING_BATCH_SIZE": MAPPING_BATCH_SIZE},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def viewer(stack: Stack) -> dict[str, str]:
    with httpx.Client(base_url=stack.ingress_url, timeout=REQUEST_TIMEOUT, trust_env=False) as http:
        username, password = create_user(stack, http, "viewer", prefix="overload")
        login = http.post("/auth/login", json={"username": username, "password": password})
        assert login.status_code == 200, login.text
        return {"Authorization": f"Bearer {login.json()['access_token']}"}


# -- helpers ----------------------------------------------------------------------------


def _flood(stack: Stack, repository: str, run_id_base: int, out: Path, *extra: str) -> Popen[bytes]:
    """The load generator in a process of its own (see ``testing/webhook_flood.py``)."""
    env = {**os.environ, "OVERLOAD_WEBHOOK_SECRET": _secret(stack)}
    return subprocess.Popen(
        [
            sys.executable, "-m", "flightdeck_common.testing.webhook_flood",
            "--url", f"{stack.ingress_url}/pipelines/webhooks/github",
            "--secret-env", "OVERLOAD_WEBHOOK_SECRET",
            "--repository", repository,
            "--run-id-base", str(run_id_base),
            "--repo-root", str(REPO_ROOT),
            "--timeout", str(REQUEST_TIMEOUT),
            "--out", str(out),
            *extra,
        ],
        env=env,
    )  # fmt: skip


def _secret(stack: Stack) -> str:
    return stack.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"].split(",")[0]


def _result(process: Popen[bytes], out: Path) -> dict[str, Any]:
    assert process.wait(timeout=OVERLOAD_SECONDS * 20) == 0
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples in a Prometheus exposition whose labels include
    ``labels`` (0 when there is none)."""
    total = 0.0
    for match in re.finditer(rf"^{name}(?:\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match["value"])
    return total


def _metrics(stack: Stack, http: httpx.Client | None = None) -> str:
    url = f"{stack.replica_url('pipeline', 0)}/metrics"
    if http is not None:
        try:
            return http.get(url).text
        except httpx.TransportError:
            # A kept-alive connection the server closed as this request went out (seen
            # once on a loaded CI machine, 49 requests into one): ask again on a new one.
            pass
    return httpx.get(url, timeout=REQUEST_TIMEOUT, trust_env=False).text


def _mapped(text: str) -> float:
    """Run deliveries mapped by this pipeline process (since it started)."""
    return _metric(
        text, "flightdeck_webhook_mapped_total", event="workflow_run", result="processed"
    )


def _backlog(text: str) -> float:
    return _metric(text, "flightdeck_webhook_backlog")


def _probe_while(
    process: Popen[bytes], stack: Stack, began: float
) -> tuple[list[tuple[int, float]], list[BacklogSample]]:
    """Until ``process`` exits: GET ``/readyz`` every PROBE_INTERVAL ((status, seconds) each)
    and read the backlog gauge every SAMPLE_INTERVAL."""
    probes: list[tuple[int, float]] = []
    samples: list[BacklogSample] = []
    ready_url = f"{stack.replica_url('pipeline', 0)}/readyz"
    sampled_at = 0.0
    with httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False) as http:
        while process.poll() is None:
            probe_began = time.monotonic()
            try:
                status = http.get(ready_url).status_code
            except httpx.TransportError:
                status = 0
            probes.append((status, time.monotonic() - probe_began))
            if time.monotonic() - sampled_at >= SAMPLE_INTERVAL:
                sampled_at = time.monotonic()
                samples.append((sampled_at - began, _backlog(_metrics(stack, http))))
            time.sleep(PROBE_INTERVAL)
    return probes, samples


def _wait_until_mapped(
    stack: Stack, mapped_before: float, count: int, within: float, began: float
) -> tuple[float, list[BacklogSample]]:
    """Wait until this process has mapped ``count`` run deliveries more than
    ``mapped_before`` and its backlog gauge reads 0; (the mapped count, backlog samples)."""
    samples: list[BacklogSample] = []
    deadline = time.monotonic() + within
    with httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False) as http:
        while True:
            text = _metrics(stack, http)
            mapped, backlog = _mapped(text) - mapped_before, _backlog(text)
            samples.append((time.monotonic() - began, backlog))
            if mapped >= count and backlog == 0:
                return mapped, samples
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{count - mapped:g} of {count} acknowledged deliveries not mapped "
                    f"within {within:g} s (backlog gauge {backlog:g})"
                )
            time.sleep(SAMPLE_INTERVAL)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _delivery(stack: Stack, repository: str, run_id: int, delivery_id: str) -> dict[str, Any]:
    """Keyword arguments of ``httpx.Client.post`` for one signed ``workflow_run`` delivery."""
    payload = json.loads(FIXTURE.read_bytes())
    payload["workflow_run"]["id"] = run_id
    payload["repository"]["full_name"] = repository
    body = json.dumps(payload).encode()
    digest = hmac.new(_secret(stack).encode(), body, hashlib.sha256).hexdigest()
    return {
        "content": body,
        "headers": {
            "X-GitHub-Event": "workflow_run",
            "X-GitHub-Delivery": delivery_id,
            "X-Hub-Signature-256": f"sha256={digest}",
            "Content-Type": "application/json",
        },
    }


def _ping(stack: Stack) -> dict[str, Any]:
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 4242}'
    digest = hmac.new(_secret(stack).encode(), body, hashlib.sha256).hexdigest()
    return {
        "content": body,
        "headers": {
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={digest}",
            "Content-Type": "application/json",
        },
    }


def _restart_pipeline(stack: Stack, env: dict[str, str | None]) -> None:
    """Stop the pipeline process and start it again with ``env`` changed (None: unset), as
    a deploy with other settings would; returns once the ingress routes to it again."""
    stack.stop_service("pipeline")
    process = stack.processes["pipeline"]
    assert process.env is not None
    for name, value in env.items():
        if value is None:
            process.env.pop(name, None)
        else:
            process.env[name] = value
    stack.start_service("pipeline")


def _report(record_property: Callable[[str, object], None], title: str, **figures: Any) -> None:
    for name, value in figures.items():
        record_property(name, value)
    print(f"{title}: {figures}")


# -- 1 and 2. four times the mapping capacity -------------------------------------------


def test_four_times_the_mapping_capacity_is_acknowledged_queued_and_drained(
    stack: Stack,
    viewer: dict[str, str],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    repository = f"acme/overload-{secrets.token_hex(4)}"
    mapped_before = _mapped(_metrics(stack))

    capacity_out = tmp_path / "capacity.json"
    burst_began = time.monotonic()
    measuring = _flood(
        stack, repository, 800_000_000, capacity_out,
        "--workers", str(CAPACITY_WORKERS), "--seconds", str(CAPACITY_SECONDS),
    )  # fmt: skip
    measured = _result(measuring, capacity_out)
    assert set(measured["statuses"]) == {"202"}, measured["statuses"]
    burst = len(measured["acknowledged"])
    _wait_until_mapped(stack, mapped_before, burst, BURST_MAPPED_WITHIN, burst_began)
    capacity = burst / (time.monotonic() - burst_began)

    mapped_before = _mapped(_metrics(stack))
    overload_out = tmp_path / "overload.json"
    flood_began = time.monotonic()
    flooding = _flood(
        stack, repository, 810_000_000, overload_out,
        "--rate", str(OVERLOAD_FACTOR * capacity), "--seconds", str(OVERLOAD_SECONDS),
    )  # fmt: skip
    probes, samples = _probe_while(flooding, stack, flood_began)
    flood = _result(flooding, overload_out)
    flood_ended = time.monotonic()
    answered = len(flood["acknowledged"])
    mapped, drain_samples = _wait_until_mapped(
        stack, mapped_before, answered, DRAIN_WITHIN, flood_began
    )
    drain_seconds = time.monotonic() - flood_ended

    with httpx.Client(base_url=stack.ingress_url, timeout=REQUEST_TIMEOUT, trust_env=False) as http:
        acknowledged = set(measured["acknowledged"]) | set(flood["acknowledged"])
        stored = wait_for_run_ids(http, viewer, repository, acknowledged, MAPPED_WITHIN)

    statuses: dict[str, int] = flood["statuses"]
    probe_times = [seconds for _, seconds in probes]
    backlog = [value for _, value in samples + drain_samples]
    _report(
        record_property,
        "overload",
        burst_per_s=round(measured["acknowledged_per_s"], 1),
        capacity_per_s=round(capacity, 1),
        offered_per_s=round(flood["offered_per_s"], 1),
        sent=flood["sent"],
        statuses=statuses,
        results=flood["results"],
        problem_codes=flood["problem_codes"],
        webhook_p50_s=round(_percentile(flood["latencies"], 0.5), 3),
        webhook_p99_s=round(_percentile(flood["latencies"], 0.99), 3),
        backlog_peak=max(backlog),
        backlog_at_flood_end=samples[-1][1] if samples else None,
        drain_seconds=round(drain_seconds, 1),
        mapped=mapped,
        acknowledged=len(acknowledged),
        stored=len(stored & acknowledged),
        probes=len(probes),
        probe_statuses=dict(Counter(status for status, _ in probes)),
        probe_p50_s=round(_percentile(probe_times, 0.5), 3),
        probe_p99_s=round(_percentile(probe_times, 0.99), 3),
        generator_cpu_s=round(flood["cpu_s"], 1),
    )

    # Offered well beyond what the worker maps ...
    assert flood["offered_per_s"] > 2 * capacity, flood["offered_per_s"]
    # ... and every delivery acknowledged as stored: no 429 (the ingress' in-flight
    # backstop), no 503 (the service's cap, its backlog bound, Traefik without a ready
    # server), no other 5xx, no timeout or connection error.
    assert statuses == {"202": flood["sent"]}, statuses
    assert flood["results"] == {"accepted": flood["sent"]}, flood["results"]
    # The instance stayed in the balancer, answering its probes promptly.
    assert {status for status, _ in probes} == {200}, Counter(s for s, _ in probes)
    assert _percentile(probe_times, 0.99) <= PROBE_P99_BOUND, sorted(probe_times)[-5:]
    # The backlog absorbed the difference (more than a second of mapping) and drained.
    assert max(backlog) >= capacity, backlog
    assert drain_samples[-1][1] == 0
    # Each acknowledged delivery mapped exactly once, into its run.
    assert mapped == answered, (mapped, answered)
    assert stored == acknowledged, sorted(stored ^ acknowledged)[:20]


# -- 3. the hard bound ------------------------------------------------------------------


def test_past_the_backlog_bound_deliveries_are_refused_and_none_acknowledged_is_lost(
    stack: Stack, viewer: dict[str, str], record_property: Callable[[str, object], None]
) -> None:
    repository = f"acme/bound-{secrets.token_hex(4)}"
    run_ids = [820_000_000 + index for index in range(BACKLOG_LIMIT + REFUSED)]
    delivery_ids = [str(uuid.uuid4()) for _ in run_ids]
    _restart_pipeline(
        stack,
        {
            "FLIGHTDECK_PIPELINE_WEBHOOK_BACKLOG_LIMIT": str(BACKLOG_LIMIT),
            "FLIGHTDECK_PIPELINE_WEBHOOK_BACKLOG_RETRY_AFTER_SECONDS": RETRY_AFTER,
            "FLIGHTDECK_PIPELINE_WEBHOOK_MAPPING_ENABLED": "false",
        },
    )
    try:
        with httpx.Client(
            base_url=stack.ingress_url, timeout=REQUEST_TIMEOUT, trust_env=False
        ) as http:

            def deliver(indexes: range) -> list[httpx.Response]:
                return [
                    http.post(
                        "/pipelines/webhooks/github",
                        **_delivery(stack, repository, run_ids[index], delivery_ids[index]),
                    )
                    for index in indexes
                ]

            answers = deliver(range(BACKLOG_LIMIT))
            # The worker recounts the backlog every ~2 s and keeps "the count plus what this
            # process accepted since"; an acceptance that commits while a count is in flight
            # is lost until the next count (DeliveryWorker._refresh_backlog overwrites it), so
            # the bound could let one more in. One recount later the figure is exact again;
            # refusals commit nothing, so none can be lost while they are answered.
            time.sleep(RECOUNT_SECONDS)
            answers += deliver(range(BACKLOG_LIMIT, len(run_ids)))
            ping = http.post("/pipelines/webhooks/github", **_ping(stack))
        metrics = _metrics(stack)
    finally:
        # Its usual settings again (mapping on, the default bound), for the module's stack.
        _restart_pipeline(
            stack,
            dict.fromkeys(
                [
                    "FLIGHTDECK_PIPELINE_WEBHOOK_BACKLOG_LIMIT",
                    "FLIGHTDECK_PIPELINE_WEBHOOK_BACKLOG_RETRY_AFTER_SECONDS",
                    "FLIGHTDECK_PIPELINE_WEBHOOK_MAPPING_ENABLED",
                ]
            ),
        )
    accepted = [answer for answer in answers if answer.status_code == 202]
    refused = answers[len(accepted) :]
    _report(
        record_property,
        "backlog bound",
        statuses=dict(Counter(answer.status_code for answer in answers)),
        backlog_gauge=_backlog(metrics),
        refusals_counted=_metric(metrics, "flightdeck_webhook_backlog_refusals_total"),
    )

    # Up to the bound: stored (acknowledged), even though nothing maps them.
    assert len(accepted) == BACKLOG_LIMIT, [a.status_code for a in answers]
    assert all(answer.json()["result"] == "accepted" for answer in accepted)
    assert _backlog(metrics) == BACKLOG_LIMIT
    # Past it: refused with the problem and when to come back, and counted.
    assert len(refused) == REFUSED
    for answer in refused:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json", answer.text
        assert answer.json()["code"] == "delivery_backlog_full", answer.text
        assert answer.headers["retry-after"] == RETRY_AFTER
    assert _metric(metrics, "flightdeck_webhook_backlog_refusals_total") == REFUSED
    # What Flightdeck does not map is not bounded by it.
    assert (ping.status_code, ping.json()["result"]) == (200, "pong"), ping.text

    # Mapping on again: every acknowledged delivery is mapped, no refused one was stored,
    # and GitHub's redelivery of a refused one (same delivery id) is accepted now.
    with httpx.Client(base_url=stack.ingress_url, timeout=REQUEST_TIMEOUT, trust_env=False) as http:
        acknowledged = set(run_ids[:BACKLOG_LIMIT])
        stored = wait_for_run_ids(http, viewer, repository, acknowledged, MAPPED_WITHIN)
        assert stored == acknowledged, sorted(stored - acknowledged)
        redelivered = http.post(
            "/pipelines/webhooks/github",
            **_delivery(stack, repository, run_ids[-1], delivery_ids[-1]),
        )
        assert redelivered.status_code == 202, redelivered.text
        assert redelivered.json()["result"] == "accepted", redelivered.text
        wait_for_run_ids(http, viewer, repository, {run_ids[-1]}, MAPPED_WITHIN)
        assert stored_run_ids(http, viewer, repository) == acknowledged | {run_ids[-1]}
