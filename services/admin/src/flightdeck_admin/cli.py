"""`flightdeck-admin` command: migrate, serve, check-settings, and the audit chain's
verify-audit-chain / rekey-audit-chain."""

import argparse
import asyncio
import json
import sys

from flightdeck_admin.app import MIGRATIONS_DIR
from flightdeck_admin.audit.chain import ChainNotRekeyable, rekey_chain, verify_chain
from flightdeck_admin.audit.head import published_head_is_ours
from flightdeck_admin.audit.keys import chain_keys
from flightdeck_admin.audit.repository import ChainHead
from flightdeck_admin.settings import Settings
from flightdeck_common.cli import CliCommand, run_cli
from flightdeck_common.db import create_engine, create_sessionmaker, session_scope


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--published-head",
        metavar="JSON",
        help="a head published earlier (GET /admin/audit-events/head or the signing log "
        'line): {"seq": ..., "hash": ..., "signed_at": ..., "signature": ...}',
    )


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    keys = chain_keys(settings)
    anchor = None
    if args.published_head:
        head = json.loads(args.published_head)
        seq, head_hash = int(head["seq"]), str(head["hash"])
        if not published_head_is_ours(
            keys, seq, head_hash, str(head["signed_at"]), str(head["signature"])
        ):
            print("the published head's signature is not by this audit signing key")
            return 2
        anchor = ChainHead(seq, head_hash)

    async def work() -> int:
        engine = create_engine(settings)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                result = await verify_chain(session, key=keys.chain_key, anchor=anchor)
        finally:
            await engine.dispose()
        print(json.dumps({"valid": result.valid, "checked": result.checked,
                          "first_invalid_seq": result.first_invalid_seq,
                          "first_invalid_id": result.first_invalid_id,
                          "first_invalid_source": result.first_invalid_source,
                          "published_head_matched": result.anchor_matched,
                          "reason": result.reason}))  # fmt: skip
        return 0 if result.valid else 1

    return asyncio.run(work())


def _rekey(settings: Settings, args: argparse.Namespace) -> int:
    keys = chain_keys(settings)

    async def work() -> int:
        engine = create_engine(settings)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                rehashed = await rekey_chain(session, key=keys.chain_key)
        except ChainNotRekeyable as exc:
            print(f"refused: the chain is broken, nothing changed: {exc}", file=sys.stderr)
            return 1
        finally:
            await engine.dispose()
        print(f"audit chain keyed: {rehashed} rows re-hashed with the chain key")
        return 0

    return asyncio.run(work())


COMMANDS = [
    CliCommand(
        "verify-audit-chain",
        "verify the keyed audit chain (and, given one, against a head published earlier)",
        _verify_arguments,
        _verify,
    ),
    CliCommand(
        "rekey-audit-chain",
        "once after upgrading: re-hash a chain written before it was keyed with the chain key",
        lambda parser: None,
        _rekey,
    ),
]


def main() -> None:
    sys.exit(
        run_cli(
            service="admin",
            default_port=8103,
            load_settings=Settings,
            app_path="flightdeck_admin.app:create_app",
            migrations_dir=MIGRATIONS_DIR,
            extra_commands=COMMANDS,
        )
    )


if __name__ == "__main__":
    main()
