"""initial: the auth database starts empty; domain tables come with their features.

Revision ID: auth_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

revision: str = "auth_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to create yet: applying it records the schema version."""


def downgrade() -> None:
    """Nothing to drop."""
