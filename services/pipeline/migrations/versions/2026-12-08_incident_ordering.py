"""incident ordering: ``incidents.source_updated_at``

The issue's ``updated_at`` as last applied to the incident: an older ``issues`` delivery (a
late or replayed "opened") no longer reopens a closed incident.

Revision ID: pipeline_0005
Revises: pipeline_0004
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pipeline_0005"
down_revision: str | None = "pipeline_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("source_updated_at")
