"""The pipeline service starts on a fresh database, migrates and serves the common surface."""

from __future__ import annotations

from pathlib import Path

from flightdeck_common.testing.service_checks import (
    applied_revision,
    assert_service_basics,
    head_revision,
    run_service_cli,
    running_app,
)
from flightdeck_pipeline.app import MIGRATIONS_DIR, create_app
from flightdeck_pipeline.settings import Settings

PREFIX = "/pipelines"


async def test_starts_migrated_and_serves_basics(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, log_json=False))
    async with running_app(app) as client:
        assert await applied_revision(app) == head_revision(MIGRATIONS_DIR)
        await assert_service_basics(client, PREFIX, "Flightdeck Pipelines")


def test_cli_migrate(postgres_database_url: str, tmp_path: Path) -> None:
    env = {"FLIGHTDECK_PIPELINE_DATABASE_URL": postgres_database_url, "ENVIRONMENT": "production"}
    env.update(PRODUCTION_SECRETS)
    result = run_service_cli("pipeline", "migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "migrated to head" in result.stdout


PRODUCTION_SECRETS = {
    "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS": "x" * 40,
    "FLIGHTDECK_PIPELINE_SERVICE_CLIENT_SECRET": "s" * 40,
}


def test_production_refuses_to_start_without_webhook_secret(tmp_path: Path) -> None:
    env = {
        "ENVIRONMENT": "production",
        "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS": "",
        "FLIGHTDECK_PIPELINE_SERVICE_CLIENT_SECRET": "s" * 40,
    }
    result = run_service_cli("pipeline", "check-settings", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS is required" in result.stderr


def test_production_refuses_weak_webhook_secret(tmp_path: Path) -> None:
    env = {
        "ENVIRONMENT": "production",
        "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS": "a" * 40 + ",changeme",
    }
    result = run_service_cli("pipeline", "check-settings", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "well-known placeholder" in result.stderr


def test_webhook_secrets_are_comma_separated_first_is_current() -> None:
    settings = Settings(github_webhook_secrets=" new-secret-value , old-secret-value ")
    values = [s.get_secret_value() for s in settings.github_webhook_secrets]
    assert values == ["new-secret-value", "old-secret-value"]
    assert "new-secret-value" not in repr(settings)


async def test_webhook_route_accepts_bodies_beyond_the_default_limit(
    sqlite_database_url: str,
) -> None:
    app = create_app(
        Settings(
            database_url=sqlite_database_url,
            log_json=False,
            github_webhook_secrets="a-secret-of-sufficient-length-000000",
        )
    )
    big = {"content-length": str(5 * 1024 * 1024)}
    async with running_app(app) as client:
        # Past the 1 MiB default: refused up front by size...
        refused = await client.post("/pipelines/runs-import", content=b"x", headers=big)
        assert refused.status_code == 413
        # ...but the webhook prefix allows 25 MiB: the body is read and its signature checked.
        passed = await client.post("/pipelines/webhooks/github", content=b"x" * (5 * 1024 * 1024))
        assert passed.status_code == 401
        assert passed.json()["code"] == "invalid_signature"
        too_big = {"content-length": str(26 * 1024 * 1024)}
        refused = await client.post("/pipelines/webhooks/github", content=b"x", headers=too_big)
        assert refused.status_code == 413
