"""run rollups: per (repository, UTC day) counters and duration histograms, kept on write

Adds ``runs.duration_bucket`` and the four rollup tables, then fills both from the
existing runs in SQL (``UPDATE`` with the bucket bounds as a ``CASE`` tree, then
``INSERT ... SELECT ... GROUP BY``). The bucket bounds are frozen here as they were when
this revision was written (``flightdeck_pipeline.runs.duration_buckets``: 0.001 s * 1.05^k,
9 significant digits, overflow from 40 days); a later change of the bounds needs its own
migration (``flightdeck-pipeline rebuild-rollups`` recomputes the rollups).

Revision ID: pipeline_0003
Revises: pipeline_0002
Create Date: 2026-11-26
"""

# ruff: noqa: S608  (the SQL is built from this file's constants only)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pipeline_0003"
down_revision: str | None = "pipeline_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RATIO = 1.05
_SMALLEST_BOUND = 0.001
_LARGEST_BOUND = 40 * 86_400.0


def _bounds() -> list[float]:
    bounds = [0.0]
    k = 0
    while True:
        bound = float(f"{_SMALLEST_BOUND * _RATIO**k:.9g}")
        bounds.append(bound)
        if bound >= _LARGEST_BOUND:
            return bounds
        k += 1


def _bucket_sql(column: str, postgresql: bool) -> str:
    bounds = _bounds()
    if postgresql:  # a binary search over the lower bounds of buckets 1..overflow
        return f"width_bucket({column}, ARRAY[{', '.join(map(repr, bounds[1:]))}]::float8[])"

    def tree(low: int, high: int) -> str:
        if low == high:
            return str(low)
        middle = (low + high + 1) // 2
        return (
            f"CASE WHEN {column} < {bounds[middle]!r} "
            f"THEN {tree(low, middle - 1)} ELSE {tree(middle, high)} END"
        )

    return tree(0, len(bounds) - 1)


def _counters() -> list[sa.Column[int]]:
    names = ("total", "queued", "running", "success", "failed", "cancelled", "durations")
    columns: list[sa.Column[int]] = [
        sa.Column(name, sa.Integer(), nullable=False) for name in names
    ]
    columns.append(sa.Column("duration_sum_us", sa.BigInteger(), nullable=False))
    return columns


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("duration_bucket", sa.Integer(), nullable=True))

    op.create_table(
        "run_rollups",
        sa.Column("repository", sa.String(length=200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_counters(),
        sa.PrimaryKeyConstraint("repository", "day", name=op.f("pk_run_rollups")),
    )
    with op.batch_alter_table("run_rollups", schema=None) as batch_op:
        batch_op.create_index("ix_run_rollups_day", ["day"], unique=False)
    op.create_table(
        "run_rollups_all",
        sa.Column("day", sa.Date(), nullable=False),
        *_counters(),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_run_rollups_all")),
    )
    op.create_table(
        "run_duration_rollups",
        sa.Column("repository", sa.String(length=200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "repository", "day", "bucket", name=op.f("pk_run_duration_rollups")
        ),
    )
    with op.batch_alter_table("run_duration_rollups", schema=None) as batch_op:
        batch_op.create_index("ix_run_duration_rollups_day", ["day"], unique=False)
    op.create_table(
        "run_duration_rollups_all",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "bucket", name=op.f("pk_run_duration_rollups_all")),
    )

    # Backfill, all in SQL.
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        day = "CAST(timezone('UTC', created_at) AS DATE)"
        microseconds = "CAST(floor(duration_seconds * 1000000 + 0.5) AS BIGINT)"
    else:
        day = "date(created_at)"
        microseconds = "CAST(duration_seconds * 1000000 + 0.5 AS INTEGER)"
    op.execute(
        f"UPDATE runs SET duration_bucket = {_bucket_sql('duration_seconds', postgresql)} "
        "WHERE duration_seconds IS NOT NULL"
    )
    counted = "status = 'completed' AND duration_seconds IS NOT NULL"
    counters = (
        "count(*), "
        + ", ".join(
            f"count(*) FILTER (WHERE display_status = '{status}')"
            for status in ("queued", "running", "success", "failed", "cancelled")
        )
        + f", count(*) FILTER (WHERE {counted}), "
        f"coalesce(sum(CASE WHEN {counted} THEN {microseconds} END), 0)"
    )
    columns = "total, queued, running, success, failed, cancelled, durations, duration_sum_us"
    op.execute(
        f"INSERT INTO run_rollups (repository, day, {columns}) "
        f"SELECT repository, {day}, {counters} FROM runs GROUP BY repository, {day}"
    )
    op.execute(
        f"INSERT INTO run_rollups_all (day, {columns}) "
        f"SELECT {day}, {counters} FROM runs GROUP BY {day}"
    )
    bucketed = f"{counted} AND duration_bucket IS NOT NULL"
    op.execute(
        "INSERT INTO run_duration_rollups (repository, day, bucket, runs) "
        f"SELECT repository, {day}, duration_bucket, count(*) FROM runs WHERE {bucketed} "
        f"GROUP BY repository, {day}, duration_bucket"
    )
    op.execute(
        "INSERT INTO run_duration_rollups_all (day, bucket, runs) "
        f"SELECT {day}, duration_bucket, count(*) FROM runs WHERE {bucketed} "
        f"GROUP BY {day}, duration_bucket"
    )


def downgrade() -> None:
    op.drop_table("run_duration_rollups_all")
    with op.batch_alter_table("run_duration_rollups", schema=None) as batch_op:
        batch_op.drop_index("ix_run_duration_rollups_day")
    op.drop_table("run_duration_rollups")
    op.drop_table("run_rollups_all")
    with op.batch_alter_table("run_rollups", schema=None) as batch_op:
        batch_op.drop_index("ix_run_rollups_day")
    op.drop_table("run_rollups")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("duration_bucket")
