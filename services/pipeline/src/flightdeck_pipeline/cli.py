"""`flightdeck-pipeline` command: migrate, serve, check-settings."""

import sys

from flightdeck_common.cli import run_cli
from flightdeck_pipeline.app import MIGRATIONS_DIR
from flightdeck_pipeline.settings import Settings


def main() -> None:
    sys.exit(
        run_cli(
            service="pipeline",
            default_port=8102,
            load_settings=Settings,
            app_path="flightdeck_pipeline.app:create_app",
            migrations_dir=MIGRATIONS_DIR,
        )
    )


if __name__ == "__main__":
    main()
