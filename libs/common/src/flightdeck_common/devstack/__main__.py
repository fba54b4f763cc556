"""``python -m flightdeck_common.devstack run [--full] [--replicas N] [--var-dir var]`` and
``render-traefik``.

``run`` starts the stack on the fixed loopback ports, prints its URLs and waits for Ctrl-C
or SIGTERM, then stops everything and exits 0. A port already in use exits 2 naming it;
a start failure or a child dying exits 1 with the tail of its log.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from flightdeck_common.devstack.processes import DevstackError
from flightdeck_common.devstack.stack import (
    REPLICA_PORT_STEP,
    SERVICES,
    PortInUseError,
    Stack,
    StackConfig,
    full_mode_postgres,
)
from flightdeck_common.devstack.traefik import ROUTE_PREFIXES, render_committed_config

EXIT_FAILURE = 1
EXIT_PORT_IN_USE = 2
CLUSTER_DRAIN_SECONDS = 7.0
"""Drain of each replica with ``--replicas`` above 1: longer than Traefik's 5 s health
check (``StackConfig.health_check_interval``), so a stopping replica leaves the balancer
before it stops accepting connections."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """First SIGINT/SIGTERM: unwind into a clean stop; ignore any further ones meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _print_urls(stack: Stack) -> None:
    config = stack.config
    mode = "PostgreSQL + Redis" if config.full else "SQLite"
    if config.replicas > 1:
        mode += f", {config.replicas} replicas of each service"
    lines = [f"Flightdeck is running ({mode})", ""]
    lines.append(f"  ingress           {stack.ingress_url}")
    for service in config.services:
        prefix = ROUTE_PREFIXES.get(service, f"/{service}")
        lines.append(f"  {service + ' docs':<17} {stack.ingress_url}{prefix}/docs")
    lines.append("")
    for service in config.services:
        for index in range(config.replicas):
            base = stack.replica_url(service, index)
            name = stack.replica_name(service, index)
            lines.append(f"  {name:<17} {base}/healthz  {base}/readyz  {base}/metrics")
    lines.append(f"  traefik metrics   http://127.0.0.1:{config.metrics_port}/metrics")
    if config.replicas > 1:
        lines.append(f"  {'internal':<17} {stack.internal_url}  (service to service)")
    if stack.postgres is not None:
        lines.append("")
        for service in SERVICES:
            lines.append(
                f"  {'postgres ' + service:<17} {stack.postgres.url(f'flightdeck_{service}')}"
            )
    if stack.redis is not None:
        lines.append(f"  {'redis':<17} {stack.redis.url}")
    lines += ["", f"  logs              {stack.log_dir}/", "", "Press Ctrl-C to stop."]
    print("\n".join(lines), flush=True)


BOOTSTRAP_PASSWORD_ENV = "FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_PASSWORD"  # noqa: S105 (a name)


def _choose_bootstrap_password(config: StackConfig) -> str | None:
    """A fresh admin password for a first start, unless the user chose one."""
    if os.environ.get(BOOTSTRAP_PASSWORD_ENV) or BOOTSTRAP_PASSWORD_ENV in config.extra_env:
        return None
    password = secrets.token_urlsafe(18)
    config.extra_env[BOOTSTRAP_PASSWORD_ENV] = password
    return password


WEBHOOK_SECRETS_ENV = "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"


def _webhook_secret_file(config: StackConfig) -> Path | None:
    """Keep one generated GitHub webhook secret per var dir (GitHub keeps it too), unless
    the user configured their own."""
    if os.environ.get(WEBHOOK_SECRETS_ENV) or WEBHOOK_SECRETS_ENV in config.extra_env:
        return None
    path = config.var_dir / "github-webhook-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    config.extra_env[WEBHOOK_SECRETS_ENV] = path.read_text().strip()
    return path


def _print_bootstrap_admin(stack: Stack, password: str | None) -> None:
    """Show the generated password once, and only when auth just created the admin with it
    (in this run: the log file also holds earlier runs, whose admin has another password)."""
    auth = stack.processes.get("auth")
    if password is None or auth is None:
        return
    if "user.bootstrap_admin_created" in auth.run_output():
        print(
            f"\n  bootstrap admin: username=admin password={password}  (shown once)\n", flush=True
        )


def run(config: StackConfig) -> int:
    """Run the stack until interrupted; return the process exit code."""
    bootstrap_password = _choose_bootstrap_password(config)
    webhook_secret_file = _webhook_secret_file(config)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = Stack(config)
    try:
        try:
            stack.start()  # stops whatever it started before raising
        except PortInUseError as exc:
            print(f"error: {exc}; stop whatever is using it and try again", file=sys.stderr)
            return EXIT_PORT_IN_USE
        except DevstackError as exc:
            print(f"error: the stack failed to start: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        _print_urls(stack)
        _print_bootstrap_admin(stack, bootstrap_password)
        if webhook_secret_file is not None:
            print(
                f"  GitHub webhook: {stack.ingress_url}/pipelines/webhooks/github "
                f"(content type application/json), secret in {webhook_secret_file}\n",
                flush=True,
            )
        down: list[str] = []
        while True:
            time.sleep(0.5)
            stack.check()
            now_down = stack.backing_services_down()
            for name in sorted(set(now_down) - set(down)):
                print(f"{name} is down: services report it on /readyz and answer 503 until it is back",
                      file=sys.stderr, flush=True)  # fmt: skip
            for name in sorted(set(down) - set(now_down)):
                print(f"{name} is back", file=sys.stderr, flush=True)
            down = now_down
    except KeyboardInterrupt:
        code = 0
    except DevstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    except Exception as exc:  # a bug here must not leave the stack's processes orphaned
        print(f"error: {exc!r}", file=sys.stderr)
        code = EXIT_FAILURE
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stopping ...", file=sys.stderr, flush=True)
    try:
        stack.stop()
    except DevstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = code or EXIT_FAILURE
    return code


def _replica_count(value: str) -> int:
    count = int(value)
    if not 1 <= count <= 9:  # replica ports are spaced 10 apart: 8101, 8111, ... 8191
        raise argparse.ArgumentTypeError(f"between 1 and 9, not {count}")
    return count


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m flightdeck_common.devstack")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the local stack until Ctrl-C")
    run_parser.add_argument("--full", action="store_true", help="use PostgreSQL + Redis")
    run_parser.add_argument(
        "--replicas",
        type=_replica_count,
        default=StackConfig.replicas,
        help="processes per service behind Traefik (more than 1 needs --full); replica i "
        f"listens on the service's port + {REPLICA_PORT_STEP}*i",
    )
    run_parser.add_argument(
        "--drain-seconds",
        type=float,
        default=None,
        help="after SIGTERM each service answers /readyz 503 this long before stopping "
        f"(default: 0, or {CLUSTER_DRAIN_SECONDS:g} with --replicas above 1)",
    )
    run_parser.add_argument("--var-dir", type=Path, default=Path("var"))
    run_parser.add_argument(
        "--services", default=",".join(SERVICES), help="comma-separated subset to run"
    )
    run_parser.add_argument(
        "--app-module-template",
        default=StackConfig.app_module_template,
        help="uvicorn app factory; {service} is replaced by the service name",
    )
    run_parser.add_argument("--ingress-port", type=int, default=StackConfig.ingress_port)
    run_parser.add_argument("--metrics-port", type=int, default=StackConfig.metrics_port)
    run_parser.add_argument("--postgres-port", type=int, default=StackConfig.postgres_port)
    run_parser.add_argument("--redis-port", type=int, default=StackConfig.redis_port)
    render_parser = commands.add_parser(
        "render-traefik", help="regenerate deploy/traefik/*.yml for the fixed ports"
    )
    render_parser.add_argument("--repo-root", type=Path, default=Path.cwd())
    pg_parser = commands.add_parser(
        "postgres", help="stop or start the PostgreSQL of a running `make run-full`"
    )
    pg_parser.add_argument("action", choices=["stop", "start"])
    pg_parser.add_argument("--var-dir", type=Path, default=Path("var"))
    pg_parser.add_argument("--postgres-port", type=int, default=StackConfig.postgres_port)
    args = parser.parse_args(argv)

    if args.command == "postgres":
        server = full_mode_postgres(args.var_dir, args.postgres_port)
        if args.action == "stop":
            server.stop()
        else:
            server.start()
        print(f"postgres {args.action}{'ped' if args.action == 'stop' else 'ed'}")
        return 0

    if args.command == "render-traefik":
        if not (args.repo_root / "deploy").is_dir():
            parser.error(f"{args.repo_root} has no deploy/ directory; pass --repo-root")
        for path in render_committed_config(args.repo_root):
            print(f"wrote {path}")
        return 0

    services = [name.strip() for name in args.services.split(",") if name.strip()]
    if args.replicas > 1 and not args.full:
        parser.error(
            "--replicas above 1 needs --full: replicas share state through PostgreSQL and Redis"
        )
    config = StackConfig(
        var_dir=args.var_dir,
        ingress_port=args.ingress_port,
        full=args.full,
        services=services,
        app_module_template=args.app_module_template,
        metrics_port=args.metrics_port,
        postgres_port=args.postgres_port,
        redis_port=args.redis_port,
        replicas=args.replicas,
        drain_seconds=(
            args.drain_seconds
            if args.drain_seconds is not None
            else CLUSTER_DRAIN_SECONDS
            if args.replicas > 1
            else StackConfig.drain_seconds
        ),
    )
    try:
        return run(config)
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
