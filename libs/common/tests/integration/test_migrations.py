"""upgrade_to_head on SQLite and PostgreSQL, including replicas migrating at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from flightdeck_common.db import create_engine
from flightdeck_common.migrations import upgrade_to_head
from flightdeck_common.settings import CommonSettings

ENV_PY = """
from sqlalchemy import MetaData
from flightdeck_common.migrations import run_env
run_env(MetaData())
"""

MIGRATION = '''
"""create widget"""
import sqlalchemy as sa
from alembic import op

revision = "w_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("widget", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO widget (id) VALUES (1)")


def downgrade() -> None:
    op.drop_table("widget")
'''


class _Settings(CommonSettings):
    service_name = "test"


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(ENV_PY)
    (directory / "versions" / "w_0001.py").write_text(MIGRATION)
    return directory


async def test_upgrade_creates_tables_and_is_idempotent(
    database_url: str, migrations_dir: Path
) -> None:
    engine = create_engine(_Settings(database_url=database_url))
    try:
        await upgrade_to_head(engine, migrations_dir)
        await upgrade_to_head(engine, migrations_dir)  # second run: nothing to do
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            rows = (await conn.execute(text("SELECT count(*) FROM widget"))).scalar()
        assert {"widget", "alembic_version"} <= set(tables)
        assert version == "w_0001"
        assert rows == 1  # the data migration ran exactly once
    finally:
        await engine.dispose()


async def test_replicas_migrating_together_take_turns(
    postgres_database_url: str, migrations_dir: Path
) -> None:
    engines = [create_engine(_Settings(database_url=postgres_database_url)) for _ in range(4)]
    try:
        await asyncio.gather(*(upgrade_to_head(e, migrations_dir) for e in engines))
        async with engines[0].connect() as conn:
            rows = (await conn.execute(text("SELECT count(*) FROM widget"))).scalar()
        assert rows == 1
    finally:
        for engine in engines:
            await engine.dispose()
