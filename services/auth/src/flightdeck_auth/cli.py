"""`flightdeck-auth` command: migrate, serve, check-settings, create-admin,
create-service-account, rotate-keys."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from flightdeck_auth.app import MIGRATIONS_DIR
from flightdeck_auth.bootstrap import build_runtime
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.reseal import reseal_secrets
from flightdeck_auth.service_accounts.service import upsert_service_account
from flightdeck_auth.settings import INTERNAL_AUDIENCES, Settings
from flightdeck_auth.users.service import create_user
from flightdeck_common.cli import CliCommand, run_cli
from flightdeck_common.db import create_engine, create_sessionmaker, session_scope
from flightdeck_common.errors import FlightdeckError
from flightdeck_common.passwords import check_password_policy, normalize_username
from flightdeck_common.rate_limit import RateLimiter
from flightdeck_common.resources import Resources


def _with_runtime(settings: Settings, work: Callable[[Any, AuthRuntime], Awaitable[int]]) -> int:
    async def main() -> int:
        engine = create_engine(settings)
        try:
            resources = Resources(
                settings=settings,
                engine=engine,
                sessionmaker=create_sessionmaker(engine),
                rate_limiter=RateLimiter(None, {}),
            )
            runtime = build_runtime(settings, resources)
            async with session_scope(resources.sessionmaker) as session:
                return await work(session, runtime)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except FlightdeckError as exc:
        print(f"flightdeck-auth: {exc.title}: {exc.detail or ''}", file=sys.stderr)
        return 2


def _create_admin(settings: Settings, args: argparse.Namespace) -> int:
    password = os.environ.get("FLIGHTDECK_AUTH_NEW_ADMIN_PASSWORD") or getpass.getpass(
        "password for the new admin: "
    )
    username = normalize_username(args.username)
    check_password_policy(password, username=username)

    async def work(session: Any, rt: AuthRuntime) -> int:
        await create_user(
            session,
            username=username,
            password_hash=await rt.hasher.hash(password),
            role="admin",
            actor="cli",
        )
        print(f"admin {username!r} created")
        return 0

    return _with_runtime(settings, work)


def _create_service_account(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: Any, rt: AuthRuntime) -> int:
        secret = await upsert_service_account(
            session, rt, args.client_id, args.audience, description=args.description
        )
        print(f"client_id={args.client_id}\nclient_secret={secret}\n(shown once; store it now)")
        return 0

    return _with_runtime(settings, work)


def _rotate_keys(settings: Settings, args: argparse.Namespace) -> int:
    async def work(session: Any, rt: AuthRuntime) -> int:
        if args.revoke_previous:
            # No ensure_key first: it must work when the current key is the refused one.
            kid, retired = await rt.keyring.rotate_revoking_previous()
            print(
                f"new signing key {kid} signs now; revoked (no longer published, tokens they "
                f"signed are refused): {', '.join(retired) or 'none'}"
            )
        else:
            await rt.keyring.ensure_key()
            kid = await rt.keyring.rotate()
            print(
                f"new signing key {kid} published; it starts signing in 90 s, and the key it "
                "replaces stays published until its tokens expire"
            )
        report = await reseal_secrets(rt.keyring.sessionmaker, rt.box)
        print(
            f"secret box: {report.resealed} values re-sealed under the current secret key, "
            f"{report.unreadable} could not be opened"
        )
        return 0

    return _with_runtime(settings, work)


def _rotate_keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--revoke-previous",
        action="store_true",
        help="the old keys are compromised: retire them now (their tokens stop verifying)",
    )


def _admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("username")


def _service_account_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("client_id")
    parser.add_argument("--audience", action="append", required=True, choices=INTERNAL_AUDIENCES)
    parser.add_argument("--description", default="")


COMMANDS = [
    CliCommand(
        "create-admin",
        "create an admin (password from FLIGHTDECK_AUTH_NEW_ADMIN_PASSWORD or a prompt)",
        _admin_arguments,
        _create_admin,
    ),
    CliCommand(
        "create-service-account",
        "create or re-key a service account and print its secret once",
        _service_account_arguments,
        _create_service_account,
    ),
    CliCommand(
        "rotate-keys",
        "make a new signing key; the old one stays in the JWKS until its tokens expire "
        "(--revoke-previous: retired at once); re-seal secrets under the current secret key",
        _rotate_keys_arguments,
        _rotate_keys,
    ),
]


def main() -> None:
    sys.exit(
        run_cli(
            service="auth",
            default_port=8101,
            load_settings=Settings,
            app_path="flightdeck_auth.app:create_app",
            migrations_dir=MIGRATIONS_DIR,
            extra_commands=COMMANDS,
        )
    )


if __name__ == "__main__":
    main()
