"""`flightdeck-pipeline` command: migrate, serve, check-settings, rebuild-rollups, deliveries."""

import argparse
import asyncio
import sys
from typing import Any

from flightdeck_common.cli import CliCommand, run_cli
from flightdeck_common.db import create_engine, create_sessionmaker
from flightdeck_pipeline.app import MIGRATIONS_DIR
from flightdeck_pipeline.runs.rollups import RollupRows, check_rollups, rebuild_rollups
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks.deliveries_cli import DELIVERIES


def _rollup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare the stored rollups with a recomputation; exit 1 when they differ",
    )


async def _rollups(settings: Settings, check: bool) -> RollupRows:
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine).begin() as session:
            if check:
                return await check_rollups(session)
            return await rebuild_rollups(session)
    finally:
        await engine.dispose()


def _run_rollups(settings: Any, args: argparse.Namespace) -> int:
    rows = asyncio.run(_rollups(settings, args.check))
    figures = ", ".join(f"{table} {count}" for table, count in rows.tables.items())
    if args.check:
        print(f"flightdeck-pipeline: rows differing from a recomputation: {figures}")
        return 1 if rows.total else 0
    print(f"flightdeck-pipeline: rollups rebuilt from runs: {figures}")
    return 0


REBUILD_ROLLUPS = CliCommand(
    name="rebuild-rollups",
    help="recompute the daily run rollups from the runs table (in SQL, one transaction)",
    add_arguments=_rollup_arguments,
    run=_run_rollups,
)


def main() -> None:
    sys.exit(
        run_cli(
            service="pipeline",
            default_port=8102,
            load_settings=Settings,
            app_path="flightdeck_pipeline.app:create_app",
            migrations_dir=MIGRATIONS_DIR,
            extra_commands=[REBUILD_ROLLUPS, DELIVERIES],
        )
    )


if __name__ == "__main__":
    main()
