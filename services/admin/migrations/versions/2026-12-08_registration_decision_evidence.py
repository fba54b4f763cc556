"""registration decisions keep their signature and public key; decided requests drop the
applicant's password hash

Revision ID: admin_2026_12_08_evidence
Revises: admin_0002
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "admin_2026_12_08_evidence"
down_revision: str | None = "admin_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("registration_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("public_key_pem", sa.Text(), nullable=True))
        batch_op.alter_column("password_hash", existing_type=sa.String(length=512), nullable=True)
    # A decided request no longer needs the applicant's hash.
    op.execute(
        "UPDATE registration_requests SET password_hash = NULL "
        "WHERE status IN ('approved', 'rejected')"
    )


def downgrade() -> None:
    op.execute("UPDATE registration_requests SET password_hash = '' WHERE password_hash IS NULL")
    with op.batch_alter_table("registration_requests", schema=None) as batch_op:
        batch_op.alter_column("password_hash", existing_type=sa.String(length=512), nullable=False)
        batch_op.drop_column("public_key_pem")
        batch_op.drop_column("signature")
