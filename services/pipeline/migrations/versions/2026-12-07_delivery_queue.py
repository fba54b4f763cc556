"""delivery queue: deliveries are mapped behind the acknowledgement

``deliveries.retry_at`` (when a delivery whose mapping raised an unexpected error may be
tried again), a partial index of the pending deliveries in arrival order (the mapping
workers' queue, and the backlog count), and ``(result, id)`` for the deliveries API's
pages by result (replaces the index on ``result`` alone).

Revision ID: pipeline_0004
Revises: pipeline_0003
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pipeline_0004"
down_revision: str | None = "pipeline_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("result = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index(batch_op.f("ix_deliveries_result"))
        batch_op.create_index("ix_deliveries_result_id", ["result", "id"], unique=False)
        batch_op.create_index(
            "ix_deliveries_pending",
            ["id"],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )
        batch_op.create_index("ix_deliveries_event_id", ["event", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_event_id")
        batch_op.drop_index("ix_deliveries_pending")
        batch_op.drop_index("ix_deliveries_result_id")
        batch_op.create_index(batch_op.f("ix_deliveries_result"), ["result"], unique=False)
        batch_op.drop_column("retry_at")
