"""`flightdeck-auth` command: migrate, serve, check-settings."""

import sys

from flightdeck_auth.app import MIGRATIONS_DIR
from flightdeck_auth.settings import Settings
from flightdeck_common.cli import run_cli


def main() -> None:
    sys.exit(
        run_cli(
            service="auth",
            default_port=8101,
            load_settings=Settings,
            app_path="flightdeck_auth.app:create_app",
            migrations_dir=MIGRATIONS_DIR,
        )
    )


if __name__ == "__main__":
    main()
