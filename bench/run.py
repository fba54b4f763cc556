"""``python -m bench [--quick]``: seed, start the stack in full mode, load it, print the table.

Steps:

1. a fresh PostgreSQL cluster under ``bench/.var/<mode>/`` (the devstack's full-mode
   server, on bench ports so a running ``make run-full`` is not disturbed); the pipeline
   migrations (``flightdeck-pipeline migrate``); the seed (``bench.seed``);
2. the stack in full mode (``Stack``/``StackConfig`` of the devstack: PostgreSQL, Redis,
   the three services under uvicorn, Traefik) on that cluster, plus a bench-only Traefik
   route ``/bench/healthz`` -> the pipeline's ``/healthz``; the bare reference
   (``bench.bare``) under uvicorn next to it;
3. per scenario: warm-up, then the measured run at fixed concurrency with wrk (the signed
   webhooks with ``bench.webhook_load``), first against the stack through the ingress,
   then against the bare reference, sampling each service's RSS meanwhile;
4. the markdown table, printed and written to ``bench/results/<timestamp>-<mode>.md`` with
   the machine description, the seed figures and the run's parameters.

Metrics scenarios run twice: cold (the pipeline started with its metrics cache off) and
cached (the pipeline restarted with the default 60 s cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx
import yaml

from bench import report, seed
from bench.report import Measurement, ScenarioResult, format_count
from bench.wrk import Request, ensure_wrk, run_wrk
from flightdeck_common.devstack.ports import LOOPBACK, port_in_use, wait_for_http
from flightdeck_common.devstack.processes import ManagedProcess
from flightdeck_common.devstack.stack import Stack, StackConfig, full_mode_postgres
from flightdeck_common.pagination import encode_cursor

REPO_ROOT = Path(__file__).resolve().parents[1]
INGRESS_PORT = 18080
METRICS_PORT = 18082
SERVICE_PORTS = {"auth": 18101, "pipeline": 18102, "admin": 18103}
POSTGRES_PORT = 55432
REDIS_PORT = 63795
BARE_PORT = 18110
ADMIN_USERNAME = "admin"
HEALTH_PATH = "/bench/healthz"
# Webhook senders: the pipeline's own cap of deliveries in flight (16; the ingress allows 24
# per replica). More would measure how fast excess is shed (429/503), not capacity; the
# overload test (libs/common/tests/resilience/test_overload.py) measures that.
WEBHOOK_CONNECTIONS = 16
CACHE_TTL_ENV = "FLIGHTDECK_PIPELINE_METRICS_CACHE_TTL_SECONDS"
LOGIN_LIMIT = "1000000/minute"  # the login limit (10/min per client) would answer 429s


@dataclass(frozen=True)
class Mode:
    name: str
    runs: int
    warmup: float
    duration: float


MODES = {
    "quick": Mode("quick", 100_000, warmup=2.0, duration=6.0),
    "full": Mode("full", 1_000_000, warmup=5.0, duration=20.0),
}


@dataclass
class Scenario:
    """One row of the table. ``stack_path``/``bare_path`` may hold ``{id}`` (random run)."""

    key: str
    name: str
    rows: str
    stack_path: str
    bare_path: str
    phase: str = "cold"  # cold | cached | webhook
    method: str = "GET"
    body: str | None = None
    authenticated: bool = True
    connections: int | None = None  # None: the run's concurrency
    id_max: int = 0


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

    @property
    def bare_url(self) -> str:
        return f"http://{LOOPBACK}:{BARE_PORT}"


# -- helpers ---------------------------------------------------------------------------


class RssSampler:
    """Peak resident memory (MB) of some processes, sampled every 200 ms in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for name, pid in self.pids.items():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        megabytes = int(line.split()[1]) / 1024
                        self.peaks[name] = max(self.peaks.get(name, 0.0), megabytes)
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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


def add_health_route(stack: Stack) -> None:
    """Route ``/bench/healthz`` through Traefik to the pipeline's ``/healthz`` (the public
    routes only serve ``/<prefix>/...``): a bench-only edit of the rendered config."""
    path = stack.var_dir / "traefik" / "dynamic.yml"
    config = yaml.safe_load(path.read_text())
    http = config["http"]
    http.setdefault("middlewares", {})["bench-healthz"] = {"replacePath": {"path": "/healthz"}}
    http["routers"]["bench-healthz"] = {
        "entryPoints": ["web"],
        "rule": f"Path(`{HEALTH_PATH}`)",
        "service": "pipeline",
        "middlewares": ["bench-healthz"],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    wait_for_http(stack.ingress_url + HEALTH_PATH, 30)


def migrate_pipeline(database_url: str) -> None:
    command = Path(sys.executable).parent / "flightdeck-pipeline"
    env = {"PATH": "/usr/bin:/bin", "FLIGHTDECK_PIPELINE_DATABASE_URL": database_url}
    subprocess.run([str(command), "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


def fetch(ctx: Context, sql: str, *args: object) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(ctx.superuser_dsn, sql, *args))


# -- scenarios -------------------------------------------------------------------------


def build_scenarios(ctx: Context, runs: int) -> list[Scenario]:
    deep = fetch(
        ctx,
        "SELECT created_at, id FROM runs ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
        runs // 2,
    )[0]
    cursor = encode_cursor([deep["created_at"], deep["id"]])
    # A mid-sized repository (rank 40 of 200 by runs) and its failed runs.
    repository = fetch(
        ctx,
        "SELECT repository FROM runs GROUP BY repository ORDER BY count(*) DESC OFFSET 40 LIMIT 1",
    )[0]["repository"]
    filtered = fetch(
        ctx,
        "SELECT count(*) FILTER (WHERE display_status = 'failed') AS failed, count(*) AS runs "
        "FROM runs WHERE repository = $1",
        repository,
    )[0]
    filters = urlencode({"repository": repository, "status": "failed"})
    total = format_count(runs) + " runs"
    deployments = fetch(ctx, "SELECT count(*) AS n FROM deployments")[0]["n"]
    dora_rows = f"{format_count(deployments)} deployments"
    body = json.dumps({"username": ADMIN_USERNAME, "password": ctx.admin_password})
    one = 1
    scenarios = [
        Scenario("health", "health (ingress -> pipeline /healthz)", "-", HEALTH_PATH,
                 "/health", authenticated=False),
        Scenario("list", "list runs, first page of 50", total, "/pipelines?limit=50",
                 "/runs"),
        Scenario("list-deep", f"list runs, cursor page at {format_count(runs // 2)}", total,
                 f"/pipelines?limit=50&cursor={cursor}", f"/runs?cursor={cursor}"),
        Scenario("list-filter", "list runs, repository + status=failed",
                 f"{format_count(filtered['runs'])} runs, {filtered['failed']} failed",
                 f"/pipelines?limit=50&{filters}", f"/runs?{filters}"),
        Scenario("run", "one run with its jobs (random id)", total, "/pipelines/{id}",
                 "/runs/{id}", id_max=runs),
        Scenario("stats", "stats, cold", total, "/pipelines/stats", "/stats"),
        Scenario("history", "history 30 d, cold", total, "/pipelines/history?days=30",
                 "/history?days=30"),
        Scenario("dora", "DORA 30 d, cold", dora_rows, "/pipelines/dora?window_days=30",
                 "/dora?window_days=30"),
        Scenario("stats-1", "stats, cold, 1 client", total, "/pipelines/stats", "/stats",
                 connections=one),
        Scenario("history-1", "history 30 d, cold, 1 client", total,
                 "/pipelines/history?days=30", "/history?days=30", connections=one),
        Scenario("dora-1", "DORA 30 d, cold, 1 client", dora_rows,
                 "/pipelines/dora?window_days=30", "/dora?window_days=30", connections=one),
        Scenario("login", "login (argon2id)", "1 user", "/auth/login", "/login",
                 method="POST", body=body, authenticated=False),
        Scenario("stats-cached", "stats, cached", total, "/pipelines/stats", "/cached/stats",
                 phase="cached"),
        Scenario("history-cached", "history 30 d, cached", total,
                 "/pipelines/history?days=30", "/cached/history?days=30", phase="cached"),
        Scenario("dora-cached", "DORA 30 d, cached", dora_rows,
                 "/pipelines/dora?window_days=30", "/cached/dora?window_days=30",
                 phase="cached"),
        Scenario("webhook", "webhook workflow_run, unique signed", "+1 run per delivery",
                 "/pipelines/webhooks/github", "/webhook", phase="webhook",
                 authenticated=False, connections=WEBHOOK_CONNECTIONS),
    ]  # fmt: skip
    return scenarios


def wrk_measure(
    ctx: Context, scenario: Scenario, base_url: str, path: str, token: str | None
) -> Measurement:
    headers: list[tuple[str, str]] = []
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    if scenario.body is not None:
        headers.append(("Content-Type", "application/json"))
    request = Request(
        path=path,
        method=scenario.method,
        body=scenario.body,
        headers=tuple(headers),
        id_max=scenario.id_max,
    )
    connections = scenario.connections or ctx.args.connections
    script = ctx.var_dir / "wrk" / f"{scenario.key}.lua"
    common = {"connections": connections, "threads": ctx.args.threads, "script_path": script}
    run_wrk(base_url, request, seconds=ctx.mode.warmup, **common)
    # Requests wrk left in flight keep the server busy (an argon2 hash is not cancelled):
    # one more request of the same kind returns once that backlog has drained.
    httpx.request(
        scenario.method,
        base_url + path.replace("{id}", "1"),
        headers=dict(headers),
        content=scenario.body,
        timeout=300,
    )
    return run_wrk(base_url, request, seconds=ctx.mode.duration, **common)


def webhook_measure(
    ctx: Context, url: str, target: str, connections: int
) -> tuple[Measurement, str]:
    repository = f"bench/{target}-webhooks"
    base = {"stack": 90_000_000_000, "bare": 91_000_000_000}[target]
    prefix = f"bench-{target}"
    argv = [
        sys.executable, "-m", "bench.webhook_load", "--url", url,
        "--repository", repository, "--run-id-base", str(base), "--delivery-prefix", prefix,
        "--connections", str(connections),
        "--warmup", str(ctx.mode.warmup), "--duration", str(ctx.mode.duration),
    ]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "BENCH_WEBHOOK_SECRET": ctx.webhook_secret}
    completed = subprocess.run(
        argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=ctx.mode.warmup + ctx.mode.duration + 120,
    )  # fmt: skip
    line = next((x for x in completed.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"webhook load failed: {completed.stderr.strip()[-2000:]}")
    result = json.loads(line.removeprefix("BENCH_JSON "))
    time.sleep(1.0)  # let the last transactions commit
    stored = fetch(
        ctx,
        "SELECT count(*) FILTER (WHERE result = 'processed') AS processed, count(*) AS raw "
        "FROM deliveries WHERE delivery_id LIKE $1",
        f"{prefix}-%",
    )[0]
    mapped = fetch(ctx, "SELECT count(*) AS n FROM runs WHERE repository = $1", repository)[0]
    lost = result["acked"] - mapped["n"]
    note = (
        f"webhook ({target}): {result['sent']} sent (warm-up included), {result['acked']} "
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


def run_scenario(ctx: Context, scenario: Scenario) -> ScenarioResult:
    stack = ctx.stack
    pids = {name: p.pid for name, p in stack.processes.items() if p.pid is not None}
    log(f"{scenario.name}: stack")
    notes = []
    with RssSampler(pids) as sampler:
        if scenario.phase == "webhook":
            stack_result, note = webhook_measure(
                ctx, stack.ingress_url + scenario.stack_path, "stack", WEBHOOK_CONNECTIONS
            )
            notes.append(note)
        else:
            token = login(ctx) if scenario.authenticated else None
            stack_result = wrk_measure(ctx, scenario, stack.ingress_url, scenario.stack_path, token)
    log(f"{scenario.name}: bare")
    if scenario.phase == "webhook":
        bare_result, note = webhook_measure(
            ctx, ctx.bare_url + scenario.bare_path, "bare", WEBHOOK_CONNECTIONS
        )
        notes.append(note)
    else:
        bare_result = wrk_measure(ctx, scenario, ctx.bare_url, scenario.bare_path, None)
    ctx.notes.extend(notes)
    return ScenarioResult(
        name=scenario.name,
        rows=scenario.rows,
        connections=scenario.connections or ctx.args.connections,
        stack=stack_result,
        bare=bare_result,
        peak_rss_mb=sampler.peaks,
    )


def restart_pipeline(ctx: Context, cache_ttl: str) -> None:
    process = ctx.stack.processes["pipeline"]
    ctx.stack.stop_service("pipeline")
    assert process.env is not None
    process.env[CACHE_TTL_ENV] = cache_ttl
    ctx.stack.start_service("pipeline")
    wait_for_http(ctx.stack.ingress_url + HEALTH_PATH, 30)


def check_answers(ctx: Context) -> None:
    """The bare reference must compute what the service computes (same SQL, same data)."""
    token = login(ctx)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=120) as client:
        stack_stats = client.get(f"{ctx.stack.ingress_url}/pipelines/stats", headers=headers)
        bare_stats = client.get(f"{ctx.bare_url}/stats")
        stack_dora = client.get(
            f"{ctx.stack.ingress_url}/pipelines/dora?window_days=30", headers=headers
        )
        bare_dora = client.get(f"{ctx.bare_url}/dora?window_days=30")
    checks = {
        "stats total": (stack_stats.json()["total"], bare_stats.json()["total"]),
        "stats failed": (stack_stats.json()["failed"], bare_stats.json()["failed"]),
        "DORA deployments": (
            stack_dora.json()["deployment_frequency"]["deployments"],
            bare_dora.json()["deployments"][0],
        ),
        "DORA lead-time commits": (
            stack_dora.json()["lead_time_for_changes"]["commits"],
            bare_dora.json()["lead_time"][0],
        ),
    }
    mismatches = {k: v for k, v in checks.items() if v[0] != v[1]}
    if mismatches:
        ctx.notes.append(f"WARNING: stack and bare answers differ: {mismatches}")
    else:
        summary = ", ".join(f"{k} {v[0]}" for k, v in checks.items())
        ctx.notes.append(f"stack and bare answers agree ({summary})")


# -- main ------------------------------------------------------------------------------


def client_cpu(ctx: Context) -> str:
    """The load generators' own CPU during the measured runs, in % of one core."""

    def share(measurement: Measurement | None) -> str:
        if measurement is None or not measurement.seconds or measurement.client_cpu_seconds is None:
            return "-"
        return f"{100 * measurement.client_cpu_seconds / measurement.seconds:.0f}"

    cells = ", ".join(f"{r.name} {share(r.stack)}/{share(r.bare)}" for r in ctx.results)
    return f"load generator CPU, % of one core (stack/bare): {cells}"


def write_results(
    ctx: Context, seed_report: seed.SeedReport, machine: dict[str, str], started: datetime
) -> Path:
    table = report.markdown_table(ctx.results)
    plan = seed_report.plan
    parameters = {
        "mode": ctx.mode.name,
        "runs": f"{plan.runs:,}",
        "deployments / incidents / commits": (
            f"{plan.deployments:,} / {plan.incidents:,} / {plan.commits:,}"
        ),
        "repositories / days": f"{seed.REPOSITORIES} / {seed.DAYS}",
        "columns": "rps counts 2xx/3xx answers only; p50/p99 over all answers; errors = "
        "non-2xx/3xx answers + socket errors (+ lost deliveries for webhooks); ratio = stack rps "
        "/ bare rps; RSS = peak resident memory of each service process during the stack run",
        "connections": str(ctx.args.connections),
        "wrk threads": str(ctx.args.threads),
        "warm-up / measured per scenario": f"{ctx.mode.warmup:g} s / {ctx.mode.duration:g} s",
        "load generator": "wrk (webhooks: bench.webhook_load, asyncio + uvloop, own process)",
        "stack": "devstack full mode: PostgreSQL (durable) + Redis + Traefik + 3 x uvicorn "
        "(1 process each), ENVIRONMENT=development, login rate limit raised",
        "bare reference": "bench.bare under uvicorn (1 process), asyncpg pools of 20, direct "
        "(no Traefik)",
    }
    seed_lines = {
        "seed time": f"{seed_report.total_seconds:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in seed_report.seconds.items())
        + ")",
        "rows": ", ".join(f"{k} {v:,}" for k, v in seed_report.rows.items()),
    }
    text = "\n\n".join(
        [
            f"# Flightdeck benchmark, {ctx.mode.name} run, "
            f"{started.strftime('%Y-%m-%d %H:%M UTC')}",
            table,
            "## Machine\n\n" + report.definition_list(machine),
            "## Parameters\n\n" + report.definition_list(parameters),
            "## Seed\n\n" + report.definition_list(seed_lines),
            "## Notes\n\n" + "\n".join(f"- {note}" for note in [*ctx.notes, client_cpu(ctx)]),
        ]
    )
    results_dir = REPO_ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{started.strftime('%Y%m%d-%H%M%S')}-{ctx.mode.name}.md"
    path.write_text(text + "\n")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k runs, short runs (smoke)")
    parser.add_argument("--runs", type=int, help="override the number of runs seeded")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--only", help="comma-separated scenario keys (health,list,list-deep,...,webhook)"
    )
    parser.add_argument("--var-dir", type=Path, default=REPO_ROOT / "bench" / ".var")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    mode = Mode(
        mode.name,
        args.runs or mode.runs,
        args.warmup if args.warmup is not None else mode.warmup,
        args.duration if args.duration is not None else mode.duration,
    )
    ensure_wrk()
    ports = [INGRESS_PORT, METRICS_PORT, POSTGRES_PORT, REDIS_PORT, BARE_PORT]
    busy = [port for port in [*ports, *SERVICE_PORTS.values()] if port_in_use(port)]
    if busy:
        sys.exit(f"bench: ports {busy} are in use (another bench running?)")
    started = datetime.now(UTC)
    var_dir = (args.var_dir / mode.name).absolute()
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True)

    # 1. PostgreSQL, migrations, seed.
    postgres = full_mode_postgres(var_dir, POSTGRES_PORT)
    superuser_dsn = f"postgresql://postgres@{LOOPBACK}:{POSTGRES_PORT}/flightdeck_pipeline"
    plan = seed.SeedPlan.for_runs(mode.runs)
    log(f"seeding {plan} into {var_dir}/postgres")
    postgres.start()
    try:
        migrate_pipeline(postgres.url("flightdeck_pipeline"))
        postgres_version = postgres.psql("SHOW server_version")
        seed_report = asyncio.run(seed.seed(superuser_dsn, plan))
    finally:
        postgres.stop()
    log(f"seeded in {seed_report.total_seconds:.1f} s: {seed_report.rows}")
    machine = report.machine_description(postgres_version)

    # 2. The stack (metrics cache off for the cold scenarios) and the bare reference.
    admin_password = secrets.token_urlsafe(18)
    webhook_secret = secrets.token_urlsafe(32)
    config = StackConfig(
        var_dir=var_dir,
        ingress_port=INGRESS_PORT,
        service_ports=dict(SERVICE_PORTS),
        full=True,
        metrics_port=METRICS_PORT,
        postgres_port=POSTGRES_PORT,
        redis_port=REDIS_PORT,
        startup_timeout=120,
        extra_env={
            "FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME,
            "FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_PASSWORD": admin_password,
            "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS": webhook_secret,
            "FLIGHTDECK_AUTH_RATE_LIMIT_LOGIN": LOGIN_LIMIT,
            CACHE_TTL_ENV: "0",
        },
    )
    stack = Stack(config)
    log("starting the stack (full mode)")
    stack.start()
    bare: ManagedProcess | None = None
    try:
        add_health_route(stack)
        assert stack.postgres is not None
        assert stack.redis is not None
        bare_env = {
            "PATH": "/usr/bin:/bin",
            "BENCH_PIPELINE_DSN": stack.postgres.url("flightdeck_pipeline", driver="postgresql"),
            "BENCH_AUTH_DSN": stack.postgres.url("flightdeck_auth", driver="postgresql"),
            "BENCH_REDIS_URL": stack.redis.url,
            "BENCH_WEBHOOK_SECRET": webhook_secret,
        }
        bare = ManagedProcess(
            "bare",
            [sys.executable, "-m", "uvicorn", "bench.bare:create_app", "--factory",
             "--host", LOOPBACK, "--port", str(BARE_PORT), "--no-access-log"],
            bare_env,
            stack.log_dir / "bare.log",
            cwd=REPO_ROOT,
        )  # fmt: skip
        bare.start()
        wait_for_http(f"http://{LOOPBACK}:{BARE_PORT}/health", 30, check=bare.ensure_running)
        ctx = Context(args, mode, var_dir, stack, admin_password, webhook_secret, superuser_dsn)
        check_answers(ctx)
        scenarios = build_scenarios(ctx, mode.runs)
        if args.only:
            wanted = set(args.only.split(","))
            scenarios = [s for s in scenarios if s.key in wanted]
        phases: dict[str, Callable[[], None]] = {
            "cached": lambda: restart_pipeline(ctx, "60"),
        }
        current = "cold"
        for scenario in scenarios:
            if scenario.phase != current and scenario.phase in phases:
                log(f"restarting the pipeline for the {scenario.phase} scenarios")
                phases[scenario.phase]()
            current = scenario.phase
            stack.check()
            ctx.results.append(run_scenario(ctx, scenario))
            result = ctx.results[-1]
            assert result.stack is not None
            log(
                f"  -> {result.stack.rps:.1f} rps, p99 {result.stack.p99_ms or 0:.1f} ms, "
                f"errors {result.stack.errors}, ratio {result.ratio or 0:.2f}"
            )
    finally:
        if bare is not None:
            bare.stop()
        log("stopping the stack")
        stack.stop()
    path = write_results(ctx, seed_report, machine, started)
    print()
    print(report.markdown_table(ctx.results))
    print()
    print("\n".join(f"- {note}" for note in ctx.notes if not note.startswith("client CPU")))
    print(f"\nseed: {seed_report.total_seconds:.1f} s, rows {seed_report.rows}")
    print(f"written to {path.relative_to(REPO_ROOT)}")
    return 0
