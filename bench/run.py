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
   webhooks with ``bench.webhook_load``, for the run's duration or as a burst of a fixed
   number, each followed by the mapping behind the acknowledgement with ``bench.drain``;
   the SSE fan-out with ``bench.sse_fanout``), first against the stack through the ingress,
   then against the bare reference, sampling each service's RSS meanwhile
   (``bench.measure``; the soak: ``bench.soak``);
4. the markdown table, printed and written to ``bench/results/<timestamp>-<mode>.md`` with
   the machine description, the seed figures, the run's parameters, the notes and the
   soak's memory samples.

Metrics scenarios run twice: cold (the pipeline started with its metrics cache off) and
cached (the pipeline restarted with the default 60 s cache). The last rows run cached too:
the mixed workload (a weighted draw per request), health during a login storm, the SSE
fan-out and the soak (``--soak-seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
import yaml  # type: ignore[import-untyped]

from bench import report, seed
from bench.context import (
    ADMIN_USERNAME,
    BARE_PORT,
    HEALTH_PATH,
    INGRESS_PORT,
    METRICS_PORT,
    POSTGRES_PORT,
    REDIS_PORT,
    REPO_ROOT,
    SERVICE_PORTS,
    WEBHOOK_BURST_CONNECTIONS,
    WEBHOOK_CONNECTIONS,
    Context,
    Mode,
    Outcome,
    Scenario,
    Target,
    fetch,
    log,
    login,
)
from bench.drain import SAMPLE_SECONDS
from bench.measure import sse_measure, webhook_burst_measure, webhook_measure, wrk_measure
from bench.report import Measurement, ScenarioResult, format_count
from bench.rss import RssSampler
from bench.soak import WEBHOOK_RATE as SOAK_WEBHOOK_RATE
from bench.soak import soak_measure
from bench.wrk import ensure_wrk
from flightdeck_common.devstack.ports import LOOPBACK, port_in_use, wait_for_http
from flightdeck_common.devstack.processes import ManagedProcess
from flightdeck_common.devstack.stack import Stack, StackConfig, full_mode_postgres
from flightdeck_common.pagination import encode_cursor

CACHE_TTL_ENV = "FLIGHTDECK_PIPELINE_METRICS_CACHE_TTL_SECONDS"
CACHE_TTLS = {"cold": "0", "cached": "60"}  # the pipeline's metrics cache per phase (default 60)
LOGIN_LIMIT = "1000000/minute"  # the login limit (10/min per client) would answer 429s
# Access tokens live 15 min by default: long enough for the quick runs, not for a soak.
ACCESS_TOKEN_TTL = 3600
SSE_CLIENTS = 200
# The health probe during the login storm measures latency, not throughput: few
# connections, each pausing between requests (at most 4 x 40 = 160 requests/s), so that the
# probe itself does not take the CPU the logins need.
STORM_HEALTH_CONNECTIONS = 4
STORM_HEALTH_PAUSE_MS = 25

# The mixed workload: (scenario key, weight in %, label in the row's name).
MIX = (
    ("list", 40, "list"),
    ("list-filter", 10, "filtered list"),
    ("run", 20, "run"),
    ("stats-cached", 10, "stats"),
    ("history-cached", 10, "history"),
    ("dora-cached", 5, "DORA"),
    ("health", 5, "health"),
)

MODES = {
    "quick": Mode("quick", 100_000, warmup=2.0, duration=6.0, soak=60.0, burst=2_000),
    "full": Mode("full", 1_000_000, warmup=5.0, duration=20.0, soak=600.0, burst=10_000),
}

Measure = Callable[[Context, Scenario, Target], Outcome]
MEASURES: dict[str, Measure] = {
    "wrk": wrk_measure,
    "webhook": webhook_measure,
    "webhook-burst": webhook_burst_measure,
    "sse": sse_measure,
    "soak": soak_measure,
}


# What the webhook rows' figures mean now that the pipeline maps behind the acknowledgement
# (a note under the table and a parameter of the results file).
WEBHOOK_NOTE = (
    "webhook rows: the stack answers 202 once a delivery is stored and maps it behind, so rps "
    "is the acceptance rate; the rows cell gives the mapping drain, from the first send until "
    f"the pipeline's flightdeck_webhook_mapped_total (its /metrics, read every {SAMPLE_SECONDS:g} s) grew "
    "by the deliveries accepted, and the deliveries mapped per second over it; the bare "
    "reference maps before answering (its rps is stored and mapped); errors include accepted "
    "deliveries with no run once drained"
)

# -- helpers ---------------------------------------------------------------------------


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
        Scenario("webhook", "webhook workflow_run, unique signed, accepted (202)",
                 "+1 run per delivery", "/pipelines/webhooks/github", "/webhook", phase=None,
                 kind="webhook", authenticated=False, connections=WEBHOOK_CONNECTIONS),
        Scenario("webhook-burst", "webhook burst, unique signed, accepted (202)",
                 f"{format_count(ctx.mode.burst)} at once", "/pipelines/webhooks/github",
                 "/webhook", phase=None, kind="webhook-burst", authenticated=False,
                 connections=WEBHOOK_BURST_CONNECTIONS),
    ]  # fmt: skip
    return scenarios + load_scenarios(ctx, {s.key: s for s in scenarios}, total)


def load_scenarios(ctx: Context, by_key: dict[str, Scenario], total: str) -> list[Scenario]:
    """The rows built from the others: the mixed workload, the login storm, the SSE fan-out
    and the soak, all with the metrics cache at its default."""
    mix = tuple((by_key[key], weight) for key, weight, _ in MIX)
    shares = ", ".join(f"{weight}% {label}" for _, weight, label in MIX)
    mixed = Scenario("mixed", f"mixed ({shares}), cached", total, phase="cached", mix=mix)
    webhook = by_key["webhook"]
    scenarios = [
        mixed,
        replace(by_key["health"], key="login-storm", name="health during login storm",
                phase="cached", connections=STORM_HEALTH_CONNECTIONS,
                pause_ms=STORM_HEALTH_PAUSE_MS, background=by_key["login"]),
        Scenario("sse", "SSE fan-out, events delivered/s (latency from webhook ack)",
                 f"{ctx.args.sse_rate:g} webhooks/s", "/pipelines/events", "/events",
                 phase="cached", kind="sse", connections=ctx.args.sse_clients,
                 background=webhook),
    ]  # fmt: skip
    if ctx.mode.soak > 0:
        name = f"soak {ctx.mode.soak:g} s: mixed + webhooks at {SOAK_WEBHOOK_RATE:g}/s"
        scenarios.append(
            replace(mixed, key="soak", name=name, kind="soak", background=webhook, has_bare=False)
        )
    return scenarios


def run_scenarios(ctx: Context, scenarios: list[Scenario]) -> None:
    """Each scenario in order, restarting the pipeline only when the phase (its metrics
    cache) changes: the stack starts cold."""
    current = "cold"
    for scenario in scenarios:
        if scenario.phase is not None and scenario.phase != current:
            log(f"restarting the pipeline for the {scenario.phase} scenarios")
            restart_pipeline(ctx, CACHE_TTLS[scenario.phase])
            current = scenario.phase
        ctx.stack.check()
        result = run_scenario(ctx, scenario)
        ctx.results.append(result)
        assert result.stack is not None
        ratio = f"{result.ratio:.2f}" if result.ratio is not None else "-"
        log(
            f"  -> {result.stack.rps:.1f} rps, p99 {result.stack.p99_ms or 0:.1f} ms, "
            f"errors {result.stack.errors}, ratio {ratio}"
        )


def run_scenario(ctx: Context, scenario: Scenario) -> ScenarioResult:
    """The scenario against the stack (sampling the services' memory), then the bare
    reference."""
    measure = MEASURES[scenario.kind]
    log(f"{scenario.name}: stack")
    with RssSampler(ctx.service_pids) as sampler:
        token = login(ctx) if _needs_token(scenario) else None
        stack = measure(ctx, scenario, Target("stack", ctx.stack.ingress_url, token))
    bare = None
    if scenario.has_bare:
        log(f"{scenario.name}: bare")
        bare = measure(ctx, scenario, Target("bare", ctx.bare_url, None))
    return ScenarioResult(
        name=scenario.name,
        rows=stack.rows or scenario.rows,
        connections=scenario.connections or ctx.args.connections,
        stack=stack.measurement,
        bare=bare.measurement if bare is not None else None,
        peak_rss_mb=sampler.peaks,
    )


def _needs_token(scenario: Scenario) -> bool:
    return any(part.authenticated for part in [scenario, *(part for part, _ in scenario.mix)])


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
        "webhooks": WEBHOOK_NOTE,
        "webhook burst": f"{ctx.mode.burst:,} unique signed deliveries at once from "
        f"{WEBHOOK_BURST_CONNECTIONS} connections through the ingress, no warm-up; rps = "
        "answers 202 per second from the first send to the last answer, p50/p99 over every "
        "answer, errors = refused (any answer but 202, timeouts, socket errors) + lost",
        "connections": str(ctx.args.connections),
        "wrk threads": str(ctx.args.threads),
        "warm-up / measured per scenario": f"{ctx.mode.warmup:g} s / {ctx.mode.duration:g} s",
        "load generator": "wrk (webhooks: bench.webhook_load, SSE: bench.sse_fanout, asyncio "
        "+ uvloop, own processes)",
        "mixed workload": ", ".join(f"{weight}% {label}" for _, weight, label in MIX)
        + " (one draw per request in wrk's Lua), metrics cache at its default",
        "login storm": f"login wrk at {ctx.args.connections} connections; meanwhile the "
        f"health wrk (the row) at {STORM_HEALTH_CONNECTIONS} connections, each pausing "
        f"{STORM_HEALTH_PAUSE_MS} ms before each request (the pauses set its rps: compare "
        "p99, not the ratio)",
        "SSE fan-out": f"{ctx.args.sse_clients} clients, {ctx.args.sse_rate:g} webhooks/s; rps = "
        "events delivered/s, p50/p99 = webhook ack -> event received, errors = missing events "
        "+ failed or dropped connections",
        "soak": f"{ctx.mode.soak:g} s" if ctx.mode.soak > 0 else "off",
        "stack": "devstack full mode: PostgreSQL (durable) + Redis + Traefik + 3 x uvicorn "
        "(1 process each), ENVIRONMENT=development, login rate limit raised, access tokens "
        "valid 1 h (the soak outlasts the default 15 min)",
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
            *(f"## {title}\n\n{section}" for title, section in ctx.sections.items()),
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
        "--only",
        help="comma-separated scenario keys (health,list,list-deep,...,webhook,webhook-burst,"
        "mixed,login-storm,sse,soak)",
    )
    parser.add_argument(
        "--burst-count",
        type=int,
        help="deliveries in the webhook burst (default 10000, quick 2000)",
    )
    parser.add_argument(
        "--soak-seconds", type=float, help="soak length (default 600, quick 60; 0: no soak)"
    )
    parser.add_argument("--sse-clients", type=int, default=SSE_CLIENTS, help="SSE fan-out")
    parser.add_argument("--sse-rate", type=float, default=20.0, help="SSE fan-out webhooks/s")
    parser.add_argument("--var-dir", type=Path, default=REPO_ROOT / "bench" / ".var")
    return parser.parse_args(argv)


def mode_from_args(args: argparse.Namespace) -> Mode:
    """The quick or full mode, with what the command line overrides."""
    mode = MODES["quick" if args.quick else "full"]
    overrides = {
        "runs": args.runs,
        "warmup": args.warmup,
        "duration": args.duration,
        "soak": args.soak_seconds,
        "burst": args.burst_count,
    }
    return replace(mode, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = mode_from_args(args)
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
            "FLIGHTDECK_AUTH_ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TOKEN_TTL),
            CACHE_TTL_ENV: CACHE_TTLS["cold"],
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
        if any(s.kind.startswith("webhook") for s in scenarios):
            ctx.notes.append(WEBHOOK_NOTE)
        run_scenarios(ctx, scenarios)
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
