"""What the scenarios share: ports and names, the run's mode, scenarios, targets, the context
(stack, secrets, results, notes) and the small helpers every runner uses."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx

from bench.report import Measurement, ScenarioResult
from flightdeck_common.devstack.ports import LOOPBACK
from flightdeck_common.devstack.stack import Stack

REPO_ROOT = Path(__file__).resolve().parents[1]
INGRESS_PORT = 18080
METRICS_PORT = 18082
SERVICE_PORTS = {"auth": 18101, "pipeline": 18102, "admin": 18103}
POSTGRES_PORT = 55432
REDIS_PORT = 63795
BARE_PORT = 18110
ADMIN_USERNAME = "admin"
HEALTH_PATH = "/bench/healthz"
# The webhook row's senders: 16, as in the results before deliveries were mapped behind the
# acknowledgement (the pipeline's cap of deliveries in flight was 16 then; it is 2048 now,
# and the ingress's 2048 per replica), so its acceptance rate compares with them.
WEBHOOK_CONNECTIONS = 16
# The burst row's: 200 connections sending at once, far under both caps, so nothing should
# be refused (the overload test, libs/common/tests/resilience/test_overload.py, measures
# how excess is shed).
WEBHOOK_BURST_CONNECTIONS = 200


@dataclass(frozen=True)
class Mode:
    name: str
    runs: int
    warmup: float
    duration: float
    soak: float  # seconds of the soak scenario (0: no soak)
    burst: int  # deliveries in the webhook burst


@dataclass(frozen=True)
class Scenario:
    """One row of the table. ``stack_path``/``bare_path`` may hold ``{id}`` (random run).

    ``kind`` says how it is loaded: ``wrk`` (one request, or the weighted ``mix`` of other
    scenarios' requests; with ``background``, that scenario is loaded by a second wrk at the
    same time), ``webhook`` (bench.webhook_load for the run's duration), ``webhook-burst``
    (bench.webhook_load, a fixed number at once), ``sse`` (bench.sse_fanout) or ``soak``.
    ``phase``: the pipeline's metrics cache off (``cold``) or at its default (``cached``);
    None runs with the pipeline as the previous scenario left it.
    """

    key: str
    name: str
    rows: str
    stack_path: str = ""
    bare_path: str = ""
    phase: str | None = "cold"
    kind: str = "wrk"
    method: str = "GET"
    body: str | None = None
    authenticated: bool = True
    connections: int | None = None  # None: the run's concurrency
    pause_ms: int = 0  # wrk: each connection waits this long before each request
    id_max: int = 0
    mix: tuple[tuple[Scenario, int], ...] = ()
    background: Scenario | None = None
    has_bare: bool = True


@dataclass(frozen=True)
class Target:
    """Where one load run goes: the stack through the ingress (with a bearer token) or the
    bare reference."""

    name: str  # stack | bare
    base_url: str
    token: str | None

    def path(self, scenario: Scenario) -> str:
        return scenario.stack_path if self.name == "stack" else scenario.bare_path


@dataclass(frozen=True)
class Outcome:
    """One load run's figures; ``rows`` replaces the scenario's rows cell when the run
    decides it (the login storm's concurrent login rate)."""

    measurement: Measurement
    rows: str | None = None


@dataclass
class Context:
    args: argparse.Namespace
    mode: Mode
    var_dir: Path
    stack: Stack
    admin_password: str
    webhook_secret: str
    superuser_dsn: str
    results: list[ScenarioResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)  # extra results-file sections

    @property
    def bare_url(self) -> str:
        return f"http://{LOOPBACK}:{BARE_PORT}"

    @property
    def service_pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.stack.processes.items() if p.pid is not None}


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def login(ctx: Context) -> str:
    response = httpx.post(
        f"{ctx.stack.ingress_url}/auth/login",
        json={"username": ADMIN_USERNAME, "password": ctx.admin_password},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


def fetch(ctx: Context, sql: str, *args: object) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(ctx.superuser_dsn, sql, *args))
