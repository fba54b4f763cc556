"""Daily rollups of the runs, maintained in the transaction of every run write.

Four tables, keyed by the UTC day of ``created_at`` (which never changes once a run exists):

- ``run_rollups`` (repository, day) and ``run_rollups_all`` (day, every repository):
  ``total``, the count per display status, and ``durations``/``duration_sum_us`` (completed
  runs with a duration, and the sum of those durations in whole microseconds);
- ``run_duration_rollups`` (repository, day, bucket) and ``run_duration_rollups_all``
  (day, bucket): completed runs with a duration per duration bucket
  (``runs/duration_buckets.py``).

A write computes the run's contribution before and after (:class:`Contribution`) and adds
the difference with ``INSERT ... ON CONFLICT DO UPDATE SET n = table.n + excluded.n``:
atomic on PostgreSQL and SQLite, so concurrent writers (any replica) stay exact. The
differences of a transaction are summed and written as it commits (:func:`apply_change`),
so the rows every writer of a day shares are locked only for the commit (the ``rollups``
stage of ``commit_work.py``, ahead of the change events). Rows are
touched in one order (table, then key) so two writers never wait on each other in a cycle.
A row whose counters all went back to 0 stays (as zeros); readers and the consistency
check treat it like a missing row.

:func:`rebuild_rollups` recomputes every table from ``runs`` with ``INSERT ... SELECT ...
GROUP BY``; :func:`check_rollups` compares the stored rows with that recomputation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    Select,
    and_,
    case,
    cast,
    delete,
    except_,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute, Session, SessionTransaction
from sqlalchemy.sql.elements import ColumnElement

from flightdeck_pipeline import commit_work
from flightdeck_pipeline.runs.models import (
    Run,
    RunDurationRollup,
    RunDurationRollupAll,
    RunRollup,
    RunRollupAll,
)
from flightdeck_pipeline.runs.status import DisplayStatus, RunStatus

POSTGRESQL = "postgresql"
STATUS_COLUMNS = tuple(status.value for status in DisplayStatus)
COUNT_COLUMNS = ("total", *STATUS_COLUMNS, "durations", "duration_sum_us")
ROLLUP_TABLES = (RunRollup, RunRollupAll, RunDurationRollup, RunDurationRollupAll)

# The columns of ``runs`` a contribution is computed from.
CONTRIBUTION_COLUMNS: tuple[QueryableAttribute[Any], ...] = (
    Run.id,
    Run.repository,
    Run.created_at,
    Run.status,
    Run.display_status,
    Run.duration_seconds,
    Run.duration_bucket,
)


def duration_microseconds(seconds: float) -> int:
    """Whole microseconds, rounded half up (the SQL of :func:`_microseconds_sql` agrees)."""
    return math.floor(seconds * 1_000_000 + 0.5)


@dataclass(frozen=True)
class Contribution:
    """What one run adds to the rollups: its day, display status and counted duration."""

    repository: str
    day: date
    display_status: str
    duration_us: int | None  # completed with a duration, else None
    bucket: int | None  # its bucket (None when not counted)

    @classmethod
    def of(cls, row: Any) -> Contribution:
        """From a row with :data:`CONTRIBUTION_COLUMNS`."""
        created_at: datetime = row.created_at
        counted = row.status == RunStatus.COMPLETED.value and row.duration_seconds is not None
        return cls(
            repository=row.repository,
            day=created_at.astimezone(UTC).date(),
            display_status=row.display_status,
            duration_us=duration_microseconds(row.duration_seconds) if counted else None,
            bucket=row.duration_bucket if counted else None,
        )


def _add_counts(
    counts: dict[Any, dict[str, int]], key: Any, contribution: Contribution, sign: int
) -> None:
    row = counts.setdefault(key, dict.fromkeys(COUNT_COLUMNS, 0))
    row["total"] += sign
    row[contribution.display_status] += sign
    if contribution.duration_us is not None:
        row["durations"] += sign
        row["duration_sum_us"] += sign * contribution.duration_us


def _increment_statement(dialect_insert: Callable[[Any], Any], model: Any) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET n = table.n + excluded.n`` of a rollup
    table, for every counter; executed with one dict of values per row."""
    table = model.__table__
    statement = dialect_insert(table)
    keys = [column.name for column in table.primary_key.columns]
    counters = [column.name for column in table.columns if column.name not in keys]
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={name: table.c[name] + statement.excluded[name] for name in counters},
    )


# Built once per dialect and table: SQLAlchemy then compiles each statement once (a
# multi-row ``VALUES`` built per call would not be cached, and costs more than the write).
_INCREMENTS = {
    dialect: {model: _increment_statement(dialect_insert, model) for model in ROLLUP_TABLES}
    for dialect, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


# The four tables in the order they are written, with their key columns.
_WRITE_ORDER: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (RunRollup, ("repository", "day")),
    (RunRollupAll, ("day",)),
    (RunDurationRollup, ("repository", "day", "bucket")),
    (RunDurationRollupAll, ("day", "bucket")),
)
# Keys of Session.info (the sync session behind an AsyncSession).
_STAGED = "flightdeck_pipeline.rollups.staged"


class _Changes:
    """Counter differences per rollup table and key, summed over a transaction's writes."""

    def __init__(self) -> None:
        self.rows: dict[Any, dict[Any, dict[str, int]]] = {model: {} for model, _ in _WRITE_ORDER}

    def add(self, old: Contribution | None, new: Contribution | None) -> None:
        for contribution, sign in ((old, -1), (new, 1)):
            if contribution is None:
                continue
            day = contribution.day
            _add_counts(self.rows[RunRollup], (contribution.repository, day), contribution, sign)
            _add_counts(self.rows[RunRollupAll], day, contribution, sign)
            if contribution.bucket is not None:
                for model, key in (
                    (RunDurationRollup, (contribution.repository, day, contribution.bucket)),
                    (RunDurationRollupAll, (day, contribution.bucket)),
                ):
                    self.rows[model].setdefault(key, {"runs": 0})["runs"] += sign

    def write(self, session: Session) -> None:
        """Add the differences to the stored rows (created when missing), table by table
        and in key order: writers lock rows in one order, so none waits on another in a
        cycle. Rows whose differences are all 0 are not touched."""
        dialect = session.get_bind().dialect.name
        try:
            statements = _INCREMENTS[dialect]
        except KeyError:
            raise NotImplementedError(f"no upsert for dialect {dialect!r}") from None
        for model, keys in _WRITE_ORDER:
            values = [
                {**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), **n}
                for key, n in sorted(self.rows[model].items())
                if any(n.values())
            ]
            if values:
                # One row: a plain execute; several: an executemany, in key order.
                session.execute(statements[model], values[0] if len(values) == 1 else values)


async def apply_change(
    session: AsyncSession, old: Contribution | None, new: Contribution | None
) -> None:
    """Replace ``old``'s contribution by ``new``'s (None: no run) in the four tables, in
    ``session``'s transaction (which must have begun: the run was just written in it).

    The differences are staged on the session and written as the transaction commits (the
    ``rollups`` stage of ``commit_work.py``, ahead of the change events): the rows every writer of a
    day updates (the day's row over all repositories above all) are then locked only
    while the transaction commits, not while it maps the rest of its delivery. That stays
    exact: the run's row is locked (inserted or ``FOR UPDATE``) from the write that
    computed ``old`` and ``new`` until the commit, so no other writer changes its
    contribution meanwhile; a rollback drops what was staged. Within a savepoint the
    differences are written at once (its rollback must undo them).

    Nothing is written when the contribution did not change (a redelivery, an update of
    descriptive fields only).
    """
    if old == new:
        return
    sync_session = session.sync_session
    if sync_session.in_nested_transaction():
        changes = _Changes()
        changes.add(old, new)
        await session.run_sync(changes.write)
        return
    info = sync_session.info
    commit_work.attach(sync_session, "rollups")
    staged: _Changes | None = info.get(_STAGED)
    if staged is None:
        staged = info[_STAGED] = _Changes()
    staged.add(old, new)


def _write_staged(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint is being released; nothing is staged within one
    staged: _Changes | None = session.info.pop(_STAGED, None)
    if staged is not None:
        staged.write(session)


def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_STAGED, None)


commit_work.register(
    commit_work.CommitStage("rollups", before_commit=_write_staged, after_transaction_end=_forget)
)


# -- recomputation from runs -------------------------------------------------------------


def rollup_day(column: Any, dialect: str) -> ColumnElement[date]:
    """The UTC day of a timestamp column, as a ``date`` (SQLite: ``'YYYY-MM-DD'`` text)."""
    if dialect == POSTGRESQL:
        return cast(func.timezone(literal_column("'UTC'"), column), Date)
    return func.date(column, type_=Date)


def _microseconds_sql(column: Any, dialect: str) -> ColumnElement[int]:
    half_up = column * literal_column("1000000") + literal_column("0.5")
    if dialect == POSTGRESQL:
        return cast(func.floor(half_up), BigInteger)
    return cast(half_up, Integer)  # SQLite: CAST truncates, and the value is >= 0


def _counted() -> ColumnElement[bool]:
    return and_(Run.status == RunStatus.COMPLETED.value, Run.duration_seconds.is_not(None))


def run_counts(dialect: str, keys: list[Any], *filters: ColumnElement[bool]) -> Select[Any]:
    """``keys`` + the rollup counters (in :data:`COUNT_COLUMNS` order) of the runs matching
    ``filters``, grouped by ``keys`` (no keys: one row over all of them)."""
    counted = _counted()
    columns: list[Any] = [func.count().label("total")]
    columns += [
        func.count().filter(Run.display_status == status).label(status) for status in STATUS_COLUMNS
    ]
    columns.append(func.count().filter(counted).label("durations"))
    microseconds = case((counted, _microseconds_sql(Run.duration_seconds, dialect)))
    columns.append(
        cast(func.coalesce(func.sum(microseconds), 0), BigInteger).label("duration_sum_us")
    )
    statement = select(*keys, *columns).where(*filters)
    return statement.group_by(*keys) if keys else statement


def run_buckets(dialect: str, keys: list[Any], *filters: ColumnElement[bool]) -> Select[Any]:
    """``keys`` + ``bucket`` + ``runs``: completed runs with a duration per bucket."""
    bucket = Run.duration_bucket.label("bucket")
    return (
        select(*keys, bucket, func.count().label("runs"))
        .where(*filters, _counted(), Run.duration_bucket.is_not(None))
        .group_by(*keys, Run.duration_bucket)
    )


def _expected(dialect: str) -> dict[Any, tuple[list[str], Select[Any]]]:
    day = rollup_day(Run.created_at, dialect)
    return {
        RunRollup: (
            ["repository", "day", *COUNT_COLUMNS],
            run_counts(dialect, [Run.repository, day.label("day")]),
        ),
        RunRollupAll: (["day", *COUNT_COLUMNS], run_counts(dialect, [day.label("day")])),
        RunDurationRollup: (
            ["repository", "day", "bucket", "runs"],
            run_buckets(dialect, [Run.repository, day.label("day")]),
        ),
        RunDurationRollupAll: (
            ["day", "bucket", "runs"],
            run_buckets(dialect, [day.label("day")]),
        ),
    }


@dataclass(frozen=True)
class RollupRows:
    """Rows per rollup table (a rebuild: rows written; a check: rows that differ)."""

    tables: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.tables.values())


async def rebuild_rollups(session: AsyncSession) -> RollupRows:
    """Recompute the four tables from ``runs`` in SQL (``INSERT ... SELECT ... GROUP BY``).

    On PostgreSQL the rollup tables are locked against writers (readers go on with the
    previous rows) until the caller commits: a run write waits at its rollup update, so
    it is applied on top of the recomputed rows, never lost nor counted twice.
    """
    dialect = session.get_bind().dialect.name
    if dialect == POSTGRESQL:
        names = ", ".join(model.__tablename__ for model in ROLLUP_TABLES)
        await session.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
    written: dict[str, int] = {}
    for model, (columns, query) in _expected(dialect).items():
        await session.execute(delete(model))
        table = model.__table__
        await session.execute(insert(table).from_select(columns, query))
        written[model.__tablename__] = int(
            await session.scalar(select(func.count()).select_from(table)) or 0
        )
    return RollupRows(written)


def _stored(model: Any, columns: list[str]) -> Select[Any]:
    table = model.__table__
    counters = [name for name in columns if name in COUNT_COLUMNS or name == "runs"]
    return select(*(table.c[name] for name in columns)).where(
        or_(*(table.c[name] != 0 for name in counters))
    )


async def check_rollups(session: AsyncSession) -> RollupRows:
    """Rows of each rollup table that differ from a recomputation (missing, extra or
    different; stored rows of zeros are ignored). All zeros: consistent."""
    dialect = session.get_bind().dialect.name
    differences: dict[str, int] = {}
    for model, (columns, query) in _expected(dialect).items():
        stored = _stored(model, columns)
        missing = except_(query, stored).subquery()
        extra = except_(stored, query).subquery()
        count = (
            select(func.count()).select_from(missing).scalar_subquery()
            + select(func.count()).select_from(extra).scalar_subquery()
        )
        differences[model.__tablename__] = int(await session.scalar(select(count)) or 0)
    return RollupRows(differences)
