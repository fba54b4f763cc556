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
atomic on PostgreSQL and SQLite, so concurrent writers (any replica) stay exact. Rows are
touched in one order (table, then key) so two writers never wait on each other in a cycle.
A row whose counters all went back to 0 stays (as zeros); readers and the consistency
check treat it like a missing row.

:func:`rebuild_rollups` recomputes every table from ``runs`` with ``INSERT ... SELECT ...
GROUP BY``; :func:`check_rollups` compares the stored rows with that recomputation.
"""

from __future__ import annotations

import math
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
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from flightdeck_common.upsert import insert_for
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


async def _increment(
    session: AsyncSession, model: Any, keys: tuple[str, ...], rows: dict[Any, dict[str, int]]
) -> None:
    """Add each row's counters to the stored row of its key (created when missing)."""
    values = [
        {**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), **counters}
        for key, counters in sorted(rows.items())
        if any(counters.values())
    ]
    if not values:
        return
    table = model.__table__
    statement = insert_for(session, table).values(values)
    counters = [name for name in values[0] if name not in keys]
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: table.c[name] + statement.excluded[name] for name in counters},
        )
    )


async def apply_change(
    session: AsyncSession, old: Contribution | None, new: Contribution | None
) -> None:
    """Replace ``old``'s contribution by ``new``'s (None: no run) in the four tables.

    Nothing is written when the contribution did not change (a redelivery, an update of
    descriptive fields only).
    """
    if old == new:
        return
    by_repository: dict[Any, dict[str, int]] = {}
    by_day: dict[Any, dict[str, int]] = {}
    buckets_by_repository: dict[Any, dict[str, int]] = {}
    buckets_by_day: dict[Any, dict[str, int]] = {}
    for contribution, sign in ((old, -1), (new, 1)):
        if contribution is None:
            continue
        _add_counts(by_repository, (contribution.repository, contribution.day), contribution, sign)
        _add_counts(by_day, contribution.day, contribution, sign)
        if contribution.bucket is not None:
            repository_key = (contribution.repository, contribution.day, contribution.bucket)
            day_key = (contribution.day, contribution.bucket)
            for rows, key in ((buckets_by_repository, repository_key), (buckets_by_day, day_key)):
                rows.setdefault(key, {"runs": 0})["runs"] += sign
    await _increment(session, RunRollup, ("repository", "day"), by_repository)
    await _increment(session, RunRollupAll, ("day",), by_day)
    await _increment(
        session, RunDurationRollup, ("repository", "day", "bucket"), buckets_by_repository
    )
    await _increment(session, RunDurationRollupAll, ("day", "bucket"), buckets_by_day)


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
