"""The auth service starts on a fresh database, migrates and serves the common surface."""

from __future__ import annotations

from pathlib import Path

from flightdeck_auth.app import MIGRATIONS_DIR, create_app
from flightdeck_auth.settings import Settings
from flightdeck_common.testing.service_checks import (
    applied_revision,
    assert_service_basics,
    head_revision,
    run_service_cli,
    running_app,
)

PREFIX = "/auth"


async def test_starts_migrated_and_serves_basics(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, log_json=False))
    async with running_app(app) as client:
        assert await applied_revision(app) == head_revision(MIGRATIONS_DIR)
        await assert_service_basics(client, PREFIX, "Flightdeck Auth")


def test_cli_migrate(postgres_database_url: str, tmp_path: Path) -> None:
    env = {"FLIGHTDECK_AUTH_DATABASE_URL": postgres_database_url, "ENVIRONMENT": "production"}
    env.update(PRODUCTION_SECRETS)
    result = run_service_cli("auth", "migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "migrated to head" in result.stdout


PRODUCTION_SECRETS = {"FLIGHTDECK_AUTH_SECRET_KEY": "k" * 40}
