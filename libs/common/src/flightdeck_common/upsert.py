"""Dialect-aware INSERT ... ON CONFLICT for PostgreSQL and SQLite.

Concurrent writers of the same natural key must end with one row: that is the
database's job (a unique constraint + ON CONFLICT), never a read-then-write.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(session: AsyncSession, table: Any) -> Any:
    """``insert(table)`` of the session's dialect, which has ``on_conflict_do_*``."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for dialect {dialect!r}")
