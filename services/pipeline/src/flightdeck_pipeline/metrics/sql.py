"""Dialect-aware SQL building blocks of the metrics: UTC days, elapsed seconds, percentiles.

Every aggregate runs in the database. PostgreSQL has ``percentile_cont``; SQLite has no
percentile function, so :func:`summarize` computes the same interpolated percentile with
window functions (see there). Both return bit-identical results on the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Numeric,
    Select,
    String,
    case,
    cast,
    extract,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

POSTGRESQL = "postgresql"

# A timestamp column or expression (mapped attributes included).
Timestamp = ColumnElement[Any] | QueryableAttribute[Any]


def dialect_of(session: AsyncSession) -> str:
    """The name of the session's database dialect (``postgresql`` or ``sqlite``)."""
    return session.get_bind().dialect.name


def utc_day(column: Timestamp, dialect: str) -> ColumnElement[str]:
    """The UTC calendar day of a timestamp column as ``'YYYY-MM-DD'`` text."""
    if dialect == POSTGRESQL:
        # Constants inlined (not bound) so the same expression can appear in GROUP BY.
        utc = func.timezone(literal_column("'UTC'"), column)
        return func.to_char(utc, literal_column("'YYYY-MM-DD'"), type_=String)
    # SQLite stores UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
    return func.date(column, type_=String)


def seconds_between(later: Timestamp, earlier: Timestamp, dialect: str) -> ColumnElement[float]:
    """``later - earlier`` in seconds, rounded to the millisecond on both backends.

    SQLite's ``julianday`` keeps milliseconds (as a double); PostgreSQL keeps
    microseconds. Rounding both to milliseconds gives the same value everywhere.
    """
    if dialect == POSTGRESQL:
        epoch = cast(extract("epoch", later - earlier), Numeric)
        return cast(func.round(epoch, 3), Float)
    elapsed = (func.julianday(later) - func.julianday(earlier)) * literal_column("86400.0")
    return cast(func.round(elapsed, 3), Float)


@dataclass(frozen=True)
class Summary:
    """Count, mean and interpolated percentiles of a set of values (None when empty)."""

    count: int
    mean: float | None
    percentiles: tuple[float | None, ...]


async def summarize(
    session: AsyncSession, values: Select[Any], percentiles: Sequence[float]
) -> Summary:
    """Count, mean and percentiles of the first column of ``values`` (NULLs ignored).

    Percentiles are PostgreSQL's ``percentile_cont`` (continuous, interpolated): with
    the n values sorted ascending and 0-based ranks, position = p * (n - 1); the
    result is ``v[floor] + (position - floor) * (v[ceil] - v[floor])``. On SQLite the
    same arithmetic is done in SQL: ``ROW_NUMBER``/``COUNT`` windows rank the sorted
    values and one aggregate picks the two neighbouring ranks and interpolates, in the
    same floating-point operations, so both backends return identical numbers. The
    median is ``p = 0.5`` (the mean of the two middle values for an even count).
    """
    source = values.subquery("summarized")
    value = source.c[0]
    if dialect_of(session) == POSTGRESQL:
        columns: list[ColumnElement[Any]] = [func.count(value), func.avg(value)]
        columns += [
            func.percentile_cont(literal(p, Float)).within_group(value) for p in percentiles
        ]
        row = (await session.execute(select(*columns))).one()
    else:
        ranked = (
            select(
                value.label("value"),
                (func.row_number().over(order_by=value) - 1).label("rank"),
                func.count().over().label("n"),
            )
            .where(value.is_not(None))
            .subquery("ranked")
        )
        columns = [func.count(), func.avg(ranked.c.value)]
        for p in percentiles:
            position = literal(p, Float) * (ranked.c.n - 1)
            low = cast(position, Integer)  # floor: position >= 0
            high = low + case((position > low, 1), else_=0)  # ceil
            fraction = func.max(position - low)
            low_value = func.max(case((ranked.c.rank == low, ranked.c.value)))
            high_value = func.max(case((ranked.c.rank == high, ranked.c.value)))
            columns.append(low_value + fraction * (high_value - low_value))
        row = (await session.execute(select(*columns))).one()
    count = int(row[0] or 0)
    mean = float(row[1]) if row[1] is not None else None
    results = tuple(float(v) if v is not None else None for v in row[2:])
    return Summary(count=count, mean=mean, percentiles=results)


def round_or_none(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None
