"""Alembic glue shared by the services' ``migrations/env.py`` and startup code."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

# Arbitrary constant: replicas starting together take turns migrating on PostgreSQL.
MIGRATION_LOCK_ID = 0x466C6467  # "Fldg"


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    """Build an alembic Config for a service without relying on the working directory."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def upgrade_to_head(engine: AsyncEngine, migrations_dir: Path) -> None:
    """Apply all pending migrations on ``engine`` (safe with several replicas)."""
    config = alembic_config(migrations_dir, engine.url.render_as_string(hide_password=False))
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID}
            )
        await connection.run_sync(_upgrade, config)
    logger.info("database migrated to head", extra={"migrations": str(migrations_dir)})


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def run_env(target_metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py``.

    Uses the connection handed over by :func:`upgrade_to_head` when there is one,
    otherwise connects to ``sqlalchemy.url`` (the ``alembic`` CLI path).
    """
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on_connection(connection, target_metadata)
        return
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=target_metadata,
            literal_binds=True,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(config.get_main_option("sqlalchemy.url") or "", target_metadata))


async def _run_online(url: str, target_metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
            await connection.run_sync(_run_on_connection, target_metadata)
    finally:
        await engine.dispose()


def _run_on_connection(connection: Connection, target_metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our UTCDateTime as plain ``sa.DateTime(timezone=True)`` in migrations."""
    from flightdeck_common.db import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False
