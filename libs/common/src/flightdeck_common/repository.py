"""Generic async repository with keyset pagination (all SQL lives in repositories)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, Self, TypeVar

from sqlalchemy import Row, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute

from flightdeck_common.errors import InvalidCursor
from flightdeck_common.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_DB_INT,
    MAX_PAGE_SIZE,
    decode_cursor,
    encode_cursor,
)

M = TypeVar("M", bound=DeclarativeBase)


class RepositoryBase(Generic[M]):
    """Data access for one model. Subclasses set ``model`` and add their queries.

    The repository never commits: the request's session dependency owns the
    transaction; repositories only ``flush()``.
    """

    model: type[M]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def from_session(cls, session: AsyncSession) -> Self:
        return cls(session)

    async def get_by_id(self, id_: Any) -> M | None:
        return await self.session.get(self.model, id_)

    async def add(self, instance: M, *, flush: bool = True) -> M:
        self.session.add(instance)
        if flush:
            await self.session.flush()
        return instance

    async def paginate(
        self,
        statement: Select[Any],
        *,
        order_by: Sequence[InstrumentedAttribute[Any]],
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        descending: bool = True,
    ) -> tuple[list[M], str | None]:
        """Return one page of ``statement`` ordered by ``order_by`` and the next cursor.

        ``order_by`` must end with a unique column (usually the primary key) so the
        order is total; the cursor holds the last row's values of those columns.
        """
        page = _page_statement(statement, order_by, limit, cursor, descending)
        rows: list[M] = list((await self.session.scalars(page)).all())
        return _split_page(rows, order_by, limit)

    async def paginate_rows(
        self,
        statement: Select[Any],
        *,
        order_by: Sequence[InstrumentedAttribute[Any]],
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        descending: bool = True,
    ) -> tuple[list[Row[Any]], str | None]:
        """``paginate`` for a statement of columns (which must include ``order_by``'s):
        plain rows with attribute access, without the ORM's work per object (identity
        map, instrumented attributes): for pages that are only read and serialized."""
        page = _page_statement(statement, order_by, limit, cursor, descending)
        rows = list((await self.session.execute(page)).all())
        return _split_page(rows, order_by, limit)

    @classmethod
    def select_all(cls) -> Select[tuple[M]]:
        return select(cls.model)


def _page_statement(
    statement: Select[Any],
    order_by: Sequence[InstrumentedAttribute[Any]],
    limit: int,
    cursor: str | None,
    descending: bool,
) -> Select[Any]:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidCursor(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    if cursor is not None:
        values = decode_cursor(cursor, len(order_by))
        _check_types(order_by, values)
        statement = statement.where(_after(order_by, values, descending))
    ordering = [c.desc() if descending else c.asc() for c in order_by]
    return statement.order_by(*ordering).limit(limit + 1)


R = TypeVar("R")


def _split_page(
    rows: list[R], order_by: Sequence[InstrumentedAttribute[Any]], limit: int
) -> tuple[list[R], str | None]:
    """The page (``limit`` rows of the ``limit + 1`` fetched) and the next cursor, if more."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor([getattr(rows[-1], c.key) for c in order_by])


def _after(
    columns: Sequence[InstrumentedAttribute[Any]], values: list[Any], descending: bool
) -> Any:
    """Keyset predicate: rows strictly after ``values`` in the (col1, col2, ...) order.

    Expanded as (c1 > v1) OR (c1 = v1 AND c2 > v2) ... so it works on every backend, and
    ANDed with the redundant c1 >= v1: PostgreSQL does not turn the OR into an index
    bound, so without it a page deep in the table walked the composite index from the
    first row, filtering out every row before the cursor (a cursor at 500k of 1M runs:
    seconds per page).
    """
    clauses = []
    for i, column in enumerate(columns):
        equal_prefix = [columns[j] == values[j] for j in range(i)]
        beyond = column < values[i] if descending else column > values[i]
        clauses.append(and_(*equal_prefix, beyond))
    first = columns[0] <= values[0] if descending else columns[0] >= values[0]
    return and_(first, or_(*clauses))


def _check_types(columns: Sequence[InstrumentedAttribute[Any]], values: list[Any]) -> None:
    """Refuse cursors whose values do not fit the columns (never a database error)."""
    for column, value in zip(columns, values, strict=True):
        try:
            expected = column.type.python_type
        except NotImplementedError:
            continue
        if value is None or not isinstance(value, expected) or isinstance(value, bool):
            raise InvalidCursor("cursor is not one this API returned")
        if isinstance(value, datetime) and value.tzinfo is None:
            raise InvalidCursor("cursor is not one this API returned")
        if isinstance(value, int) and not -MAX_DB_INT - 1 <= value <= MAX_DB_INT:
            raise InvalidCursor("cursor is not one this API returned")
