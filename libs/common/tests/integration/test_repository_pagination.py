"""Keyset pagination of RepositoryBase on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Index, Integer, String, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flightdeck_common.db import UTCDateTime, create_engine, create_sessionmaker, new_metadata
from flightdeck_common.errors import InvalidCursor
from flightdeck_common.pagination import encode_cursor
from flightdeck_common.repository import RepositoryBase, _page_statement
from flightdeck_common.settings import CommonSettings


class Base(DeclarativeBase):
    metadata = new_metadata()


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ItemRepository(RepositoryBase[Item]):
    model = Item


class _Settings(CommonSettings):
    service_name = "test"


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    engine = create_engine(_Settings(database_url=database_url))
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with create_sessionmaker(engine)() as session:
        # 25 rows; several share a timestamp so the id tiebreaker matters.
        for i in range(1, 26):
            session.add(Item(id=i, name=f"item-{i}", created_at=T0 + timedelta(minutes=i // 3)))
        await session.commit()
        yield session
    await engine.dispose()


async def _walk(repo: ItemRepository, *, limit: int, descending: bool) -> list[list[int]]:
    pages: list[list[int]] = []
    cursor = None
    while True:
        rows, cursor = await repo.paginate(
            select(Item),
            order_by=[Item.created_at, Item.id],
            limit=limit,
            cursor=cursor,
            descending=descending,
        )
        pages.append([r.id for r in rows])
        if cursor is None:
            return pages


@pytest.mark.parametrize("descending", [True, False])
async def test_pages_cover_every_row_once_in_order(session: AsyncSession, descending: bool) -> None:
    pages = await _walk(ItemRepository.from_session(session), limit=7, descending=descending)
    flat = [i for page in pages for i in page]
    expected = sorted(range(1, 26), key=lambda i: (i // 3, i), reverse=descending)
    assert flat == expected
    assert [len(p) for p in pages] == [7, 7, 7, 4]


async def test_exact_multiple_has_no_empty_last_page(session: AsyncSession) -> None:
    pages = await _walk(ItemRepository.from_session(session), limit=5, descending=True)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 5]


async def test_filters_combine_with_cursor(session: AsyncSession) -> None:
    repo = ItemRepository.from_session(session)
    statement = select(Item).where(Item.id % 2 == 0)
    rows, cursor = await repo.paginate(statement, order_by=[Item.created_at, Item.id], limit=4)
    assert [r.id for r in rows] == [24, 22, 20, 18]
    rows, _ = await repo.paginate(
        statement, order_by=[Item.created_at, Item.id], limit=4, cursor=cursor
    )
    assert [r.id for r in rows] == [16, 14, 12, 10]


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor(["not-a-date", 3]),
        encode_cursor([T0.replace(tzinfo=None), 3]),
        encode_cursor([T0, "3"]),
        encode_cursor([T0]),
        "%%%",
    ],
)
async def test_foreign_cursors_are_rejected_before_sql(session: AsyncSession, cursor: str) -> None:
    repo = ItemRepository.from_session(session)
    with pytest.raises(InvalidCursor):
        await repo.paginate(select(Item), order_by=[Item.created_at, Item.id], cursor=cursor)


@pytest.mark.parametrize("limit", [0, 201])
async def test_limit_bounds(session: AsyncSession, limit: int) -> None:
    with pytest.raises(InvalidCursor):
        await ItemRepository.from_session(session).paginate(
            select(Item), order_by=[Item.id], limit=limit
        )


async def test_datetimes_come_back_timezone_aware(session: AsyncSession) -> None:
    item = await ItemRepository.from_session(session).get_by_id(4)
    assert item is not None
    assert item.created_at == T0 + timedelta(minutes=1)
    assert item.created_at.tzinfo is not None


class Event(Base):
    """A table with the composite index a newest-first list needs."""

    __tablename__ = "event"
    __table_args__ = (Index("ix_event_created_id", "created_at", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


async def test_a_deep_page_starts_at_the_cursor_in_the_index(
    postgres_database_url: str,
) -> None:
    """The keyset predicate bounds the index scan: a page 15,000 rows deep reads about one
    page of index entries, not the 15,000 before the cursor."""
    engine = create_engine(_Settings(database_url=postgres_database_url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(
                text(
                    "INSERT INTO event (id, created_at) SELECT n, "
                    "timestamptz '2026-01-01' + n * interval '1 second' "
                    "FROM generate_series(1, 30000) AS n"
                )
            )
            await conn.execute(text("ANALYZE event"))
        order_by = [Event.created_at, Event.id]
        cursor = encode_cursor([T0 + timedelta(seconds=15_000), 15_000])
        page = _page_statement(select(Event.id), order_by, 50, cursor, descending=True)
        sql = page.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        async with engine.connect() as conn:
            plan = (await conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))).scalar_one()
            ids = (await conn.execute(page)).scalars().all()
    finally:
        await engine.dispose()
    assert ids == list(range(14_999, 14_948, -1))

    def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
        found = [node] if "Scan" in node["Node Type"] else []
        return found + [s for child in node.get("Plans", []) for s in scans(child)]

    [scan] = scans(plan[0]["Plan"])
    examined = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)
    assert examined <= 100, scan
