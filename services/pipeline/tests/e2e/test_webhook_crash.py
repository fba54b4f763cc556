"""Issue 14, done when: a pipeline process killed with SIGKILL while it maps a backlog loses
nothing and doubles nothing.

The pipeline starts with mapping off (it only accepts). 1,600 signed ``workflow_run``
deliveries (a ``requested`` and a ``completed`` for each of 800 runs of one fresh
repository, shuffled) are accepted through the ingress and left pending. The pipeline is
restarted with mapping on in batches of five, and killed with SIGKILL once it has
committed a first share of the backlog (its ``flightdeck_webhook_mapped_total`` reached
200), while most of the backlog is still there. Started again, it drains the backlog; then every acknowledged
delivery is mapped exactly once: one run per run id (completed), exactly one log line per
delivery, no delivery pending, the restarted worker mapped exactly what the killed one
left, and the rollups equal a recomputation. On the embedded default (SQLite) and on
PostgreSQL + Redis.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.testing.plugin import (
    isolated_full_stack,
    isolated_stack_config,
    needs_traefik,
)
from flightdeck_common.testing.webhook_backlog import (
    PipelineDatabase,
    kill_hard,
    mapped_since,
    mapped_total,
    send_burst,
    webhook_secret,
    webhook_url,
    workflow_run_body,
    workflow_run_template,
)

pytestmark = [pytest.mark.e2e, needs_traefik, pytest.mark.timeout(360)]

REPO_ROOT = Path(__file__).resolve().parents[4]
RUNS = 800  # two deliveries each
CONNECTIONS = 100
REQUEST_TIMEOUT = 60.0
MAPPING = "FLIGHTDECK_PIPELINE_WEBHOOK_MAPPING_ENABLED"
BATCH_SIZE = "FLIGHTDECK_PIPELINE_WEBHOOK_MAPPING_BATCH_SIZE"
CRASH_BATCH_SIZE = 5  # many short transactions: the kill lands in one of them
KILL_AFTER = 200  # mapped deliveries: the worker is well into the backlog, far from its end
KILL_WITHIN = 60.0  # the restarted process has mapped that many within this
DRAIN_WITHIN = 150.0
DAY = datetime(2026, 4, 6, 8, 0, tzinfo=UTC)
# What PostgreSQL logs when a client dies inside a transaction (it rolls it back).
CUT_TRANSACTION = "unexpected EOF on client connection with an open transaction"


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def accepting_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own whose pipeline only accepts (mapping off), embedded or full."""
    env = {MAPPING: "false"}
    if request.param == "sqlite":
        with Stack(isolated_stack_config(tmp_path / "var", env)) as stack:
            yield stack
    else:
        with isolated_full_stack("flightdeck-crash", env) as stack:
            yield stack


def _deliveries(repository: str, first_run: int, prefix: str) -> list[tuple[str, bytes]]:
    template = workflow_run_template(REPO_ROOT)
    deliveries: list[tuple[str, bytes]] = []
    for index in range(RUNS):
        created = DAY + timedelta(days=index % 3, seconds=index)
        for status, conclusion, took in (("queued", None, 0), ("completed", "success", 60)):
            body = workflow_run_body(
                template,
                repository=repository,
                run_id=first_run + index,
                status=status,
                conclusion=conclusion,
                created_at=created,
                started_at=created,
                updated_at=created + timedelta(seconds=took + index % 120),
            )
            deliveries.append((f"{prefix}{len(deliveries):05d}", body))
    random.Random(first_run).shuffle(deliveries)
    return deliveries


def _kill_while_mapping(stack: Stack) -> float:
    """Wait until the pipeline has committed ``KILL_AFTER`` mapped deliveries, then SIGKILL
    it (it is mapping its next batch); what it had mapped by its last answer before."""
    pipeline = stack.replicas["pipeline"][0]
    url = stack.replica_url("pipeline", 0)
    deadline = time.monotonic() + KILL_WITHIN
    while True:
        pipeline.ensure_running()
        try:
            mapped = mapped_total(url)
        except httpx.TransportError:
            mapped = 0.0  # not listening yet
        if mapped >= KILL_AFTER:
            break
        assert time.monotonic() < deadline, f"{mapped:g} mapped within {KILL_WITHIN:g} s"
        time.sleep(0.02)
    assert kill_hard(pipeline) == -signal.SIGKILL
    return mapped


def test_a_pipeline_killed_while_mapping_loses_and_doubles_nothing(
    accepting_stack: Stack, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    stack = accepting_stack
    database = PipelineDatabase(stack)
    repository = f"acme/crash-{secrets.token_hex(4)}"
    prefix = f"crash-{secrets.token_hex(4)}-"
    first_run = 870_000_000 + secrets.randbelow(9_000_000)
    deliveries = _deliveries(repository, first_run, prefix)
    ids = [delivery_id for delivery_id, _ in deliveries]

    burst = asyncio.run(
        send_burst(
            webhook_url(stack),
            webhook_secret(stack),
            deliveries,
            connections=CONNECTIONS,
            timeout_seconds=REQUEST_TIMEOUT,
        )
    )
    assert dict(burst.statuses) == {"202": len(ids)}, burst.problem_codes
    assert dict(burst.results) == {"accepted": len(ids)}
    assert database.results(prefix) == dict.fromkeys(ids, "pending")  # nobody maps yet

    pipeline = stack.replicas["pipeline"][0]
    stack.stop_replica("pipeline", 0)
    pipeline.env |= {MAPPING: "true", BATCH_SIZE: str(CRASH_BATCH_SIZE)}
    pipeline.start()
    mapped_at_kill = _kill_while_mapping(stack)
    left = database.pending()
    # The kill came in the middle of the backlog: some of it committed, most of it not.
    assert 0 < left < len(ids), f"{left} of {len(ids)} pending at the kill"

    pipeline.env[BATCH_SIZE] = "100"
    restarted_at = time.monotonic()
    stack.start_replica("pipeline", 0)
    drain_s = database.wait_drained(DRAIN_WITHIN, interval=0.1)
    drained_at = time.monotonic()
    (mapped_after,) = mapped_since(stack, [0.0], left)  # counted from the restart
    figures: dict[str, object] = {
        "deliveries": len(ids),
        "statuses": dict(burst.statuses),
        "refused": burst.refused,
        "accepted_per_s": round(burst.acknowledged_per_s, 1),
        "mapped_seen_before_kill": int(mapped_at_kill),
        "processed_at_kill": len(ids) - left,
        "pending_at_kill": left,
        "mapped_after_restart": int(mapped_after),
        "restart_to_drained_s": round(drained_at - restarted_at, 2),
        "drain_after_ready_s": round(drain_s, 2),
    }
    if stack.postgres is not None:  # did the kill cut a batch's transaction? (not asserted)
        log = (stack.log_dir / "postgres.log").read_text(errors="replace")
        figures["transactions_cut_by_kill"] = log.count(CUT_TRANSACTION)
    for name, value in figures.items():
        record_property(name, value)
    print(f"\ncrash ({'full' if stack.config.full else 'embedded'}): {figures}")

    assert database.results(prefix) == dict.fromkeys(ids, "processed")
    assert database.pending() == 0
    runs = database.runs(repository)
    assert [run_id for run_id, *_ in runs] == [first_run + index for index in range(RUNS)]
    assert {(attempt, status, conclusion) for _, attempt, status, conclusion, _ in runs} == {
        (1, "completed", "success")
    }
    assert database.logged_deliveries(repository) == sorted(ids), "a delivery lost or doubled"
    # What the killed worker committed stayed; the restarted one mapped exactly the rest.
    assert mapped_after == left
    database.assert_rollups_consistent(tmp_path)
