"""The admin service starts on a fresh database, migrates and serves the common surface."""

from __future__ import annotations

import json
from pathlib import Path

from flightdeck_admin.app import MIGRATIONS_DIR, create_app
from flightdeck_admin.audit.head import keys_of, sign_head
from flightdeck_admin.audit.models import GENESIS_HASH
from flightdeck_admin.audit.repository import ChainHead
from flightdeck_admin.settings import Settings
from flightdeck_common.testing.service_checks import (
    applied_revision,
    assert_service_basics,
    head_revision,
    run_service_cli,
    running_app,
)

PREFIX = "/admin"


async def test_starts_migrated_and_serves_basics(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, log_json=False))
    async with running_app(app) as client:
        assert await applied_revision(app) == head_revision(MIGRATIONS_DIR)
        await assert_service_basics(client, PREFIX, "Flightdeck Admin")


def test_cli_migrate(postgres_database_url: str, tmp_path: Path) -> None:
    env = {"FLIGHTDECK_ADMIN_DATABASE_URL": postgres_database_url, "ENVIRONMENT": "production"}
    env.update(PRODUCTION_SECRETS)
    result = run_service_cli("admin", "migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "migrated to head" in result.stdout


PRODUCTION_SECRETS = {
    "FLIGHTDECK_ADMIN_SERVICE_CLIENT_SECRET": "s" * 40,
    "FLIGHTDECK_ADMIN_AUDIT_CHAIN_KEY": "c" * 40,
    "FLIGHTDECK_ADMIN_AUDIT_SIGNING_KEY": "5" * 64,  # a 32-byte seed in hex
}


async def test_cli_verifies_the_chain_against_a_published_head(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=database_url, log_json=False, **_KEYS)
    app = create_app(settings)
    async with running_app(app):
        keys = keys_of(app)
        head = sign_head(keys, ChainHead(0, GENESIS_HASH))
    env = {"FLIGHTDECK_ADMIN_DATABASE_URL": database_url, **{k.upper(): v for k, v in _ENV.items()}}
    published = json.dumps(
        {"seq": 0, "hash": head.hash, "signed_at": head.signed_at, "signature": head.signature}
    )
    ok = run_service_cli(
        "admin", "verify-audit-chain", "--published-head", published, env=env, cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["published_head_matched"] is True
    forged = published.replace(head.signature[:8], "AAAAAAAA")
    refused = run_service_cli(
        "admin", "verify-audit-chain", "--published-head", forged, env=env, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "not by this audit signing key" in refused.stdout
    rekeyed = run_service_cli("admin", "rekey-audit-chain", env=env, cwd=tmp_path)
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert "0 rows re-hashed" in rekeyed.stdout


_KEYS = {"audit_chain_key": "k" * 40, "audit_signing_key": "7" * 64}
_ENV = {f"FLIGHTDECK_ADMIN_{name}": value for name, value in _KEYS.items()}
