"""The ``flightdeck-<service>`` command line: migrate, serve, check-settings."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flightdeck_common.client_addresses import parse_trusted_proxies, trusts_every_peer
from flightdeck_common.db import create_engine
from flightdeck_common.migrations import upgrade_to_head
from flightdeck_common.settings import CommonSettings


@dataclass(frozen=True)
class CliCommand:
    """A service-specific subcommand (e.g. ``flightdeck-auth create-admin``)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Any, argparse.Namespace], int]


def run_cli(
    *,
    service: str,
    default_port: int,
    load_settings: Callable[[], CommonSettings],
    app_path: str,
    migrations_dir: Path,
    argv: Sequence[str] | None = None,
    extra_commands: Sequence[CliCommand] = (),
) -> int:
    parser = argparse.ArgumentParser(prog=f"flightdeck-{service}")
    commands = parser.add_subparsers(dest="command", required=True)
    for extra in extra_commands:
        extra.add_arguments(commands.add_parser(extra.name, help=extra.help))
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    commands.add_parser("check-settings", help="validate settings (production rules included)")
    serve = commands.add_parser("serve", help="run the service with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=default_port)
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help=(
            "addresses or CIDR networks of the ingress whose X-Forwarded-* headers are "
            "trusted (default: the FORWARDED_ALLOW_IPS setting, itself 127.0.0.1)"
        ),
    )
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except (ValidationError, ValueError) as exc:
        print(f"flightdeck-{service}: invalid settings: {exc}", file=sys.stderr)
        return 2

    for extra in extra_commands:
        if args.command == extra.name:
            return extra.run(settings, args)
    if args.command == "check-settings":
        print(f"flightdeck-{service}: settings OK ({settings.environment.value})")
        return 0
    if args.command == "migrate":
        asyncio.run(_migrate(settings, migrations_dir))
        print(f"flightdeck-{service}: database migrated to head")
        return 0

    try:
        trusted_proxies = _trusted_proxies(settings, args.forwarded_allow_ips)
    except ValueError as exc:
        print(f"flightdeck-{service}: --forwarded-allow-ips: {exc}", file=sys.stderr)
        return 2

    from flightdeck_common.shutdown import serve as serve_app

    return serve_app(
        app_path,
        args.host,
        args.port,
        trusted_proxies,
        settings.shutdown_drain_seconds,
        max_header_bytes=settings.max_header_bytes,
        header_read_timeout=settings.header_read_timeout_seconds,
    )


def _trusted_proxies(settings: CommonSettings, flag: str | None) -> str:
    """The proxies ``serve`` trusts: the flag when given, else the setting; production
    refuses ``*`` from either."""
    if flag is None:
        return settings.forwarded_allow_ips
    entries = parse_trusted_proxies(flag)
    if settings.is_production and trusts_every_peer(flag):
        raise ValueError("'*' (any peer) is refused in production: name the ingress's addresses")
    return ",".join(entries)


async def _migrate(settings: CommonSettings, migrations_dir: Path) -> None:
    engine = create_engine(settings)
    try:
        await upgrade_to_head(engine, migrations_dir)
    finally:
        await engine.dispose()
