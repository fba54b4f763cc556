"""The migration that splits ``flightdeck:auth-internal``: accounts keep the revocation
feed, only the built-in ``admin`` account keeps user administration (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from flightdeck_auth.app import MIGRATIONS_DIR
from flightdeck_auth.settings import Settings
from flightdeck_common.db import create_engine
from flightdeck_common.migrations import alembic_config

ACCOUNTS = {
    "pipeline": "flightdeck:admin-internal flightdeck:auth-internal",
    "admin": "flightdeck:auth-internal",
    "ci-sync": "flightdeck:auth-internal",
    "release-bot": "flightdeck:admin-internal",
}


async def test_old_audience_becomes_the_capabilities_each_account_needs(
    database_url: str,
) -> None:
    engine = create_engine(Settings(database_url=database_url, log_json=False))
    config = alembic_config(MIGRATIONS_DIR, engine.url.render_as_string(hide_password=False))

    def migrate(connection: Connection, revision: str, down: bool = False) -> None:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(migrate, "auth_0002")
            for number, (client_id, audiences) in enumerate(ACCOUNTS.items(), start=1):
                await connection.execute(
                    text(
                        "INSERT INTO service_accounts (id, client_id, secret_hash, audiences, "
                        "description, is_active, created_at, updated_at) VALUES "
                        "(:id, :client_id, 'x', :audiences, '', true, :now, :now)"
                    ),
                    {
                        "id": number,
                        "client_id": client_id,
                        "audiences": audiences,
                        "now": datetime.now(UTC),
                    },
                )
        async with engine.begin() as connection:
            await connection.run_sync(migrate, "head")
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT client_id, audiences FROM service_accounts")
            )
            migrated = dict(rows.tuples().all())
        assert migrated == {
            "pipeline": "flightdeck:admin-internal flightdeck:auth-revocations",
            "admin": "flightdeck:auth-revocations flightdeck:auth-users",
            "ci-sync": "flightdeck:auth-revocations",
            "release-bot": "flightdeck:admin-internal",
        }
        async with engine.begin() as connection:
            await connection.run_sync(migrate, "auth_0002", True)
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT client_id, audiences FROM service_accounts")
            )
            restored = dict(rows.tuples().all())
        assert restored["admin"] == "flightdeck:auth-internal"
        assert restored["pipeline"] == "flightdeck:admin-internal flightdeck:auth-internal"
    finally:
        await engine.dispose()
