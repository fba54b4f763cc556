"""SQL for runs, jobs and log lines. Writes are upserts, safe under concurrency:
``(repository, run_id)`` and ``(run, job_id)`` are unique, and an update applies only when
it is not older than what is stored (attempt, then status rank, then the sender's time).

Every change of a run also updates the daily rollups (``runs/rollups.py``) in the same
transaction: the run's row is locked before it is updated, so its previous contribution
is known exactly when the rollups are adjusted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, bindparam, case, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.db import utcnow
from flightdeck_common.repository import RepositoryBase
from flightdeck_pipeline.runs.duration_buckets import duration_bucket
from flightdeck_pipeline.runs.models import Job, LogLine, Run
from flightdeck_pipeline.runs.rollups import Contribution, apply_change
from flightdeck_pipeline.runs.status import STATUS_RANK, RunStatus, display_status
from flightdeck_pipeline.runs.updates import JobUpdate, RunUpdate

# Descriptive fields keep their stored value when an update does not carry one.
_COALESCED_RUN_FIELDS = (
    "run_number",
    "workflow_name",
    "name",
    "event",
    "branch",
    "head_sha",
    "commit_message",
    "actor",
    "html_url",
    "started_at",
)


def _not_older(table: Any, excluded: Any) -> ColumnElement[bool]:
    same_rank_newer = or_(
        table.c.source_updated_at.is_(None),
        excluded.source_updated_at.is_(None),
        excluded.source_updated_at >= table.c.source_updated_at,
    )
    return or_(
        excluded.run_attempt > table.c.run_attempt,
        and_(
            excluded.run_attempt == table.c.run_attempt,
            or_(
                excluded.status_rank > table.c.status_rank,
                and_(excluded.status_rank == table.c.status_rank, same_rank_newer),
            ),
        ),
    )


def _duration(started: datetime | None, completed: datetime | None) -> float | None:
    if started is None or completed is None:
        return None
    return max(0.0, (completed - started).total_seconds())


# Every column of ``runs``: a write returns the stored row, which is also what its change
# event describes (no second read).
RUN_COLUMNS = tuple(Run.__table__.c)
_RUN_KEY = ["repository", "run_id"]
_JOB_KEY = ["run_pk", "job_id"]
_RUN_VALUE_COLUMNS = (
    "repository",
    "run_id",
    "run_attempt",
    "status",
    "status_rank",
    "conclusion",
    "display_status",
    "completed_at",
    "duration_seconds",
    "duration_bucket",
    "source",
    "source_updated_at",
    "created_at",
    "updated_at",
    *_COALESCED_RUN_FIELDS,
)
_JOB_VALUE_COLUMNS = (
    "run_pk",
    "job_id",
    "run_attempt",
    "name",
    "status",
    "status_rank",
    "conclusion",
    "runner_name",
    "steps_count",
    "started_at",
    "completed_at",
    "html_url",
    "source_updated_at",
    "updated_at",
)


@dataclass(frozen=True)
class _Statements:
    """The write statements of one dialect, built once: executed with a dict of values,
    they hit SQLAlchemy's compiled cache instead of being rebuilt for every delivery."""

    insert_run: Any  # INSERT ... ON CONFLICT DO NOTHING RETURNING every column
    update_run: Any  # INSERT ... ON CONFLICT DO UPDATE ... WHERE not older RETURNING ...
    lock_run: Any  # SELECT every column ... FOR UPDATE
    upsert_job: Any
    add_log_line: Any
    add_delivery_log_line: Any  # ... ON CONFLICT (delivery_id) DO NOTHING


def _statements(dialect_insert: Callable[[Any], Any]) -> _Statements:
    table = Run.__table__
    insert = dialect_insert(table)
    excluded = insert.excluded
    changes: dict[str, Any] = {
        name: excluded[name]
        for name in _RUN_VALUE_COLUMNS
        if name not in ("created_at", "repository", "run_id", *_COALESCED_RUN_FIELDS)
    }
    for name in _COALESCED_RUN_FIELDS:
        changes[name] = func.coalesce(excluded[name], table.c[name])
    # A newer attempt starts over: its timing must not inherit the old attempt's.
    changes["started_at"] = case(
        (excluded.run_attempt > table.c.run_attempt, excluded.started_at),
        else_=func.coalesce(excluded.started_at, table.c.started_at),
    )
    jobs = Job.__table__
    job_insert = dialect_insert(jobs)
    job_excluded = job_insert.excluded
    job_changes = {name: job_excluded[name] for name in _JOB_VALUE_COLUMNS if name not in _JOB_KEY}
    for name in ("runner_name", "started_at", "html_url"):
        job_changes[name] = func.coalesce(job_excluded[name], jobs.c[name])
    log_insert = dialect_insert(LogLine.__table__)
    return _Statements(
        insert_run=insert.on_conflict_do_nothing(index_elements=_RUN_KEY).returning(*RUN_COLUMNS),
        update_run=insert.on_conflict_do_update(
            index_elements=_RUN_KEY, set_=changes, where=_not_older(table, excluded)
        ).returning(*RUN_COLUMNS),
        lock_run=select(*RUN_COLUMNS)
        .where(table.c.repository == bindparam("repository"), table.c.run_id == bindparam("run_id"))
        .with_for_update(),
        upsert_job=job_insert.on_conflict_do_update(
            index_elements=_JOB_KEY, set_=job_changes, where=_not_older(jobs, job_excluded)
        ),
        add_log_line=log_insert,
        add_delivery_log_line=log_insert.on_conflict_do_nothing(index_elements=["delivery_id"]),
    )


_STATEMENTS = {"postgresql": _statements(postgresql.insert), "sqlite": _statements(sqlite.insert)}


def _statements_for(session: AsyncSession) -> _Statements:
    dialect = session.get_bind().dialect.name
    try:
        return _STATEMENTS[dialect]
    except KeyError:
        raise NotImplementedError(f"no upsert for dialect {dialect!r}") from None


class RunRepository(RepositoryBase[Run]):
    model = Run

    async def upsert(self, update: RunUpdate, *, source: str = "github") -> int:
        """Insert or update the run (and its rollups); returns its primary key."""
        return int((await self.upsert_row(update, source=source)).id)

    async def upsert_row(self, update: RunUpdate, *, source: str = "github") -> Any:
        """Insert or update the run (and its rollups); returns the stored row (every column
        of ``runs``, as it is now in this transaction).

        1. ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a new run adds its contribution.
        2. Otherwise the stored row is read and locked (``FOR UPDATE``), then updated with
           ``ON CONFLICT DO UPDATE ... WHERE`` not older ``RETURNING`` the new row; the
           rollups get new minus old. (On SQLite the first statement already holds the
           database's write lock.)
        """
        now = utcnow()
        duration = _duration(update.started_at, update.completed_at)
        values: dict[str, Any] = {
            "repository": update.repository,
            "run_id": update.run_id,
            "run_attempt": update.run_attempt,
            "status": update.status.value,
            "status_rank": STATUS_RANK[update.status],
            "conclusion": update.conclusion.value if update.conclusion else None,
            "display_status": display_status(update.status, update.conclusion).value,
            "completed_at": update.completed_at,
            "duration_seconds": duration,
            "duration_bucket": duration_bucket(duration) if duration is not None else None,
            "source": source,
            "source_updated_at": update.source_updated_at,
            "created_at": update.created_at or now,
            "updated_at": now,
        }
        for name in _COALESCED_RUN_FIELDS:
            values[name] = getattr(update, name)
        statements = _statements_for(self.session)
        new = (await self.session.execute(statements.insert_run, values)).first()
        if new is not None:
            await apply_change(self.session, None, Contribution.of(new))
            return new
        old = await self._locked(update.repository, update.run_id)
        new = (await self.session.execute(statements.update_run, values)).first()
        if new is None:
            return old  # older than what is stored: nothing changed
        await apply_change(self.session, Contribution.of(old), Contribution.of(new))
        return new

    async def _locked(self, repository: str, run_id: int) -> Any:
        """The stored run (every column), its row locked until the transaction ends."""
        statement = _statements_for(self.session).lock_run
        row = (
            await self.session.execute(statement, {"repository": repository, "run_id": run_id})
        ).first()
        # It exists: the insert just conflicted with it (PostgreSQL waits for the
        # inserting transaction), and runs are never deleted.
        assert row is not None
        return row

    async def ensure_placeholder(self, job: JobUpdate) -> int:
        """The run a job belongs to, created (queued) when its own event has not come yet."""
        now = utcnow()
        values = {
            "repository": job.repository,
            "run_id": job.run_id,
            "run_attempt": job.run_attempt,
            "status": RunStatus.QUEUED.value,
            "status_rank": 0,
            "display_status": "queued",
            "name": job.workflow_name,
            "workflow_name": job.workflow_name,
            "branch": job.branch,
            "head_sha": job.head_sha,
            "source": "github",
            "created_at": now,
            "updated_at": now,
        }
        created = await self.session.execute(_statements_for(self.session).insert_run, values)
        new = created.first()
        if new is not None:
            await apply_change(self.session, None, Contribution.of(new))
            return int(new.id)
        return await self.pk_of(job.repository, job.run_id)

    async def pk_of(self, repository: str, run_id: int) -> int:
        pk = await self.session.scalar(
            select(Run.id).where(Run.repository == repository, Run.run_id == run_id)
        )
        assert pk is not None
        return int(pk)

    async def upsert_job(self, run_pk: int, job: JobUpdate) -> None:
        values: dict[str, Any] = {
            "run_pk": run_pk,
            "job_id": job.job_id,
            "run_attempt": job.run_attempt,
            "name": job.name,
            "status": job.status.value,
            "status_rank": STATUS_RANK[job.status],
            "conclusion": job.conclusion.value if job.conclusion else None,
            "runner_name": job.runner_name,
            "steps_count": job.steps_count,
            "started_at": job.started_at,
            "completed_at": job.completed_at,
            "html_url": job.html_url,
            "source_updated_at": job.source_updated_at,
            "updated_at": utcnow(),
        }
        await self.session.execute(_statements_for(self.session).upsert_job, values)

    async def add_log_line(
        self,
        run_pk: int,
        level: str,
        message: str,
        *,
        delivery_id: str | None = None,
        logged_at: datetime | None = None,
    ) -> None:
        """Append a log line; a line tied to a delivery is written once, however often it
        is redelivered."""
        statements = _statements_for(self.session)
        await self.session.execute(
            statements.add_log_line if delivery_id is None else statements.add_delivery_log_line,
            {
                "run_pk": run_pk,
                "level": level,
                "message": message[:10_000],
                "logged_at": logged_at or utcnow(),
                "delivery_id": delivery_id,
            },
        )


class RunQueries(RepositoryBase[Run]):
    """Reads of runs and logs (keyset pagination on indexed orders)."""

    model = Run

    async def page(
        self,
        *,
        display_status: str | None,
        repository: str | None,
        branch: str | None,
        actor: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Row[Any]], str | None]:
        """A page of runs as plain rows of every column of ``runs``."""
        statement = select(*Run.__table__.columns)
        if display_status is not None:
            statement = statement.where(Run.display_status == display_status)
        if repository is not None:
            statement = statement.where(Run.repository == repository)
        if branch is not None:
            statement = statement.where(Run.branch == branch)
        if actor is not None:
            statement = statement.where(Run.actor == actor)
        if since is not None:
            statement = statement.where(Run.created_at >= since)
        if until is not None:
            statement = statement.where(Run.created_at < until)
        return await self.paginate_rows(
            statement, order_by=[Run.created_at, Run.id], limit=limit, cursor=cursor
        )

    async def jobs_of(self, run_pk: int) -> list[Job]:
        rows = await self.session.scalars(
            select(Job).where(Job.run_pk == run_pk).order_by(Job.run_attempt, Job.job_id)
        )
        return list(rows.all())


class LogQueries(RepositoryBase[LogLine]):
    model = LogLine

    async def logs_of(
        self, run_pk: int, *, limit: int, cursor: str | None
    ) -> tuple[list[LogLine], str | None]:
        statement = select(LogLine).where(LogLine.run_pk == run_pk)
        return await self.paginate(
            statement, order_by=[LogLine.id], limit=limit, cursor=cursor, descending=False
        )

    async def recent_logs(
        self, *, level: str | None, limit: int, cursor: str | None
    ) -> tuple[list[LogLine], str | None]:
        statement = select(LogLine)
        if level is not None:
            statement = statement.where(LogLine.level == level)
        return await self.paginate(statement, order_by=[LogLine.id], limit=limit, cursor=cursor)
