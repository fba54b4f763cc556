"""Runs, their jobs and log lines."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from flightdeck_common.db import TimestampMixin, UTCDateTime, utcnow
from flightdeck_pipeline.db import Base


class Run(TimestampMixin, Base):
    """One workflow run, identified by ``(repository, run_id)`` whatever its source.

    ``status``/``conclusion`` are GitHub's; ``display_status`` (queued, running, success,
    failed, cancelled) is derived from them and is what lists and stats use.
    ``source_updated_at`` is the sender's own update time: older events never overwrite
    newer state.
    """

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("repository", "run_id"),
        # Lists: newest first with a unique tiebreaker, optionally filtered.
        Index("ix_runs_created_id", "created_at", "id"),
        Index("ix_runs_repository_created", "repository", "created_at", "id"),
        Index("ix_runs_display_status_created", "display_status", "created_at", "id"),
        Index("ix_runs_branch_created", "branch", "created_at", "id"),
        Index("ix_runs_actor_created", "actor", "created_at", "id"),
        # Stats over a window of completed runs, per repository.
        Index("ix_runs_repository_completed", "repository", "completed_at"),
        Index("ix_runs_completed", "completed_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(String(200), nullable=False)
    run_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    run_attempt: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    run_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    workflow_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    event: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # queued 0 < in_progress 1 < completed 2: an update with a lower rank never applies.
    status_rank: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    conclusion: Mapped[str | None] = mapped_column(String(24), nullable=True)
    display_status: Mapped[str] = mapped_column(String(16), nullable=False)
    branch: Mapped[str | None] = mapped_column(String(255), nullable=True)
    head_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    commit_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(100), nullable=True)
    html_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    # runs.duration_buckets.duration_bucket(duration_seconds), set with it.
    duration_bucket: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="github", nullable=False)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("run_pk", "job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    job_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    name: Mapped[str] = mapped_column(String(300), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    status_rank: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    conclusion: Mapped[str | None] = mapped_column(String(24), nullable=True)
    runner_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    steps_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    run_attempt: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    html_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class LogLine(Base):
    __tablename__ = "log_lines"
    __table_args__ = (
        Index("ix_log_lines_run_id", "run_pk", "id"),
        Index("ix_log_lines_level_id", "level", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    level: Mapped[str] = mapped_column(String(16), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # Webhook delivery that produced the line: a redelivery never adds a second one.
    delivery_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)


class RollupCounts:
    """Counters of the runs created on one UTC day (see ``runs/rollups.py``).

    ``total`` and the counts per display status; ``durations``/``duration_sum_us``: the
    completed runs with a duration and the sum of those durations in microseconds (an
    integer, so adding and subtracting contributions stays exact).
    """

    total: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    queued: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    running: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    success: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    failed: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    cancelled: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    durations: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    duration_sum_us: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)


class RunRollup(RollupCounts, Base):
    """Runs of one repository created on one UTC day, maintained with every run write."""

    __tablename__ = "run_rollups"
    __table_args__ = (Index("ix_run_rollups_day", "day"),)

    repository: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class RunRollupAll(RollupCounts, Base):
    """Runs of all repositories created on one UTC day (the unfiltered stats and history)."""

    __tablename__ = "run_rollups_all"

    day: Mapped[date] = mapped_column(Date, primary_key=True)


class RunDurationRollup(Base):
    """Completed runs with a duration per duration bucket, per repository and UTC day."""

    __tablename__ = "run_duration_rollups"
    __table_args__ = (Index("ix_run_duration_rollups_day", "day"),)

    repository: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    runs: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class RunDurationRollupAll(Base):
    """Completed runs with a duration per duration bucket and UTC day, all repositories."""

    __tablename__ = "run_duration_rollups_all"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    runs: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
