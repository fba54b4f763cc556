"""Deployments (with their status history), changes (pushed commits) and incidents."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from flightdeck_common.db import TimestampMixin, UTCDateTime
from flightdeck_pipeline.db import Base


class Deployment(TimestampMixin, Base):
    """A deployment of ``sha`` to ``environment``. ``deployment_id`` is GitHub's id (None for
    manual ones). ``status`` is the latest state; ``succeeded_at`` the first success."""

    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("repository", "deployment_id"),
        Index("ix_deployments_prod_succeeded", "production", "succeeded_at"),
        Index("ix_deployments_repository_succeeded", "repository", "succeeded_at"),
        Index("ix_deployments_repository_sha", "repository", "sha"),
        Index("ix_deployments_created_id", "created_at", "id"),
        # DORA windows without a repository filter (production is an OR on the name).
        Index("ix_deployments_succeeded", "succeeded_at"),
        Index("ix_deployments_failed", "failed_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(String(200), nullable=False)
    deployment_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    environment: Mapped[str] = mapped_column(String(100), nullable=False)
    production: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    sha: Mapped[str] = mapped_column(String(64), nullable=False)
    ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    creator: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    status_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="github", nullable=False)


class DeploymentStatus(Base):
    __tablename__ = "deployment_statuses"
    __table_args__ = (
        UniqueConstraint("deployment_pk", "status_id"),
        Index("ix_deployment_statuses_deployment", "deployment_pk", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_pk: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    status_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Change(Base):
    """A commit that reached a branch (from ``push`` events): the start of lead time."""

    __tablename__ = "changes"
    __table_args__ = (
        UniqueConstraint("repository", "sha"),
        Index("ix_changes_repository_pushed", "repository", "pushed_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(String(200), nullable=False)
    sha: Mapped[str] = mapped_column(String(64), nullable=False)
    ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    authored_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    committed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pushed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Incident(TimestampMixin, Base):
    __tablename__ = "incidents"
    __table_args__ = (
        UniqueConstraint("repository", "issue_number"),
        Index("ix_incidents_repository_opened", "repository", "opened_at"),
        Index("ix_incidents_opened", "opened_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(String(200), nullable=False)
    issue_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The issue's updated_at as last applied: older updates (a replay) change nothing.
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The latest successful production deployment before the incident opened.
    deployment_pk: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), nullable=True, index=True
    )
    source: Mapped[str] = mapped_column(String(16), default="github", nullable=False)
