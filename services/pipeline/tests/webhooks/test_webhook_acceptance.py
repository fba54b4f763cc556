"""Group commit of accepted deliveries: concurrent deliveries share a commit, each is
answered once its commit succeeded, copies are duplicates, and two processes storing the
same deliveries at once neither deadlock nor double them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from flightdeck_pipeline.webhooks.acceptance import DeliveryAcceptor
from flightdeck_pipeline.webhooks.models import Delivery
from flightdeck_pipeline.webhooks.repository import NewDelivery

from ..conftest import PipelineHarness, fixture_body

BODY = fixture_body("workflow_run", "requested.payload.json")


def _delivery(delivery_id: str, result: str = "pending") -> NewDelivery:
    return NewDelivery(delivery_id, "workflow_run", "requested", BODY, result)


async def _stored(harness: PipelineHarness) -> dict[str, str]:
    async with harness.app.state.resources.sessionmaker() as session:
        rows = await session.execute(select(Delivery.delivery_id, Delivery.result))
        return {row.delivery_id: row.result for row in rows}


async def test_concurrent_deliveries_share_one_commit_and_copies_are_duplicates(
    pipeline_factory: Any,
) -> None:
    # Mapping off: what is stored stays as the acceptor wrote it.
    pipeline: PipelineHarness = await pipeline_factory(webhook_mapping_enabled=False)
    commits: list[int] = []
    acceptor = DeliveryAcceptor(pipeline.app.state.resources.sessionmaker, on_stored=commits.append)
    ids = [f"group-{n}" for n in range(40)]
    answers = await asyncio.gather(
        *(acceptor.accept(_delivery(i)) for i in ids),
        acceptor.accept(_delivery("group-3")),  # a copy in the same commit
        acceptor.accept(_delivery("ignored-one", result="ignored")),
    )
    assert answers[:40] == ["accepted"] * 40
    assert answers[40:] == ["duplicate", "ignored"]
    assert commits == [40]  # one commit; the ignored one is not pending
    stored = await _stored(pipeline)
    assert stored == {**dict.fromkeys(ids, "pending"), "ignored-one": "ignored"}
    # Stored once: a later copy is a duplicate and changes nothing.
    assert await acceptor.accept(_delivery("group-0")) == "duplicate"
    assert commits == [40]


async def test_a_failed_commit_answers_every_delivery_in_it_with_the_error(
    pipeline_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flightdeck_pipeline.webhooks.repository import DeliveryRepository

    pipeline: PipelineHarness = await pipeline_factory(webhook_mapping_enabled=False)
    acceptor = DeliveryAcceptor(pipeline.app.state.resources.sessionmaker)

    async def database_gone(self: Any, deliveries: Any) -> set[str]:
        raise ConnectionRefusedError("database gone")

    monkeypatch.setattr(DeliveryRepository, "store_many", database_gone)
    answers = await asyncio.gather(
        *(acceptor.accept(_delivery(f"lost-{n}")) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(answer, ConnectionRefusedError) for answer in answers), answers
    monkeypatch.undo()
    # Nothing was acknowledged, nothing stored; the acceptor works again afterwards.
    assert await _stored(pipeline) == {}
    assert await acceptor.accept(_delivery("after")) == "accepted"


@pytest.mark.parametrize("backend", ["postgresql+redis"], indirect=True)
async def test_two_processes_storing_the_same_deliveries_at_once_do_not_deadlock(
    pipeline_factory: Any,
) -> None:
    """Two replicas' commits with the same 60 deliveries in opposite orders: each delivery
    stored once, every answer accepted or duplicate, no deadlock (PostgreSQL would abort
    one commit with all its deliveries)."""
    pipeline: PipelineHarness = await pipeline_factory(webhook_mapping_enabled=False)
    sessionmaker = pipeline.app.state.resources.sessionmaker
    for round_number in range(5):
        ids = [f"race-{round_number}-{n}" for n in range(60)]
        first, second = DeliveryAcceptor(sessionmaker), DeliveryAcceptor(sessionmaker)
        answers = await asyncio.gather(
            *(first.accept(_delivery(i)) for i in ids),
            *(second.accept(_delivery(i)) for i in reversed(ids)),
        )
        assert sorted(answers) == sorted(["accepted"] * 60 + ["duplicate"] * 60)
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Delivery)) == 300
