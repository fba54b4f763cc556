"""`flightdeck-admin` command: migrate, serve, check-settings."""

import sys

from flightdeck_admin.app import MIGRATIONS_DIR
from flightdeck_admin.settings import Settings
from flightdeck_common.cli import run_cli


def main() -> None:
    sys.exit(
        run_cli(
            service="admin",
            default_port=8103,
            load_settings=Settings,
            app_path="flightdeck_admin.app:create_app",
            migrations_dir=MIGRATIONS_DIR,
        )
    )


if __name__ == "__main__":
    main()
