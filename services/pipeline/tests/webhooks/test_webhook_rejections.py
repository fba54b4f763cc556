"""Requests without a valid signature: limited per source before their body is read, cut at
a body read deadline, and audited aggregated (one event per source per interval), while
signed deliveries keep being accepted."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from flightdeck_common.testing.service_checks import running_app
from flightdeck_pipeline.app import create_app
from flightdeck_pipeline.outbox import OutboxEvent
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks.rejection_audit import flush_rejections
from flightdeck_pipeline.webhooks.rejections import (
    FLAGGED_BODY_READ_SECONDS,
    FLAGGED_CONCURRENT_READS,
)
from flightdeck_pipeline.webhooks.signatures import sign

from ..conftest import WEBHOOK_SECRET, fixture_body

PipelineHarness = Any
RECEIVER = "/pipelines/webhooks/github"
REJECTED = "pipeline.webhook.signature_rejected"
WRONG = "sha256=" + "0" * 64
# Well past what any of these requests should take; a request that waits for a body that
# never comes would hang until then.
ANSWER_WITHIN = 10.0


def _headers(signature: str | None, delivery_id: str | None = None) -> dict[str, str]:
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return headers


def _client(harness: PipelineHarness, address: str) -> httpx.AsyncClient:
    """A client of the running app whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=harness.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _endless_body() -> AsyncIterator[bytes]:
    """A slow upload: the first bytes of a body, then nothing more, ever."""
    yield b'{"zen": "'
    await asyncio.Event().wait()


async def _rejection_events(harness: PipelineHarness) -> list[dict[str, Any]]:
    async with harness.app.state.resources.sessionmaker() as session:
        rows = await session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == REJECTED))
        return [json.loads(row.payload) for row in rows]


async def _flush(harness: PipelineHarness) -> int:
    return await flush_rejections(
        harness.app.state.resources.sessionmaker, harness.app.state.webhook_signature_rejections
    )


async def test_rejections_are_audited_once_per_source_per_interval(
    pipeline: PipelineHarness,
) -> None:
    body = fixture_body("push")
    ids = [f"forged-{n}" for n in range(6)]
    async with (
        _client(pipeline, "198.51.100.7") as one,
        _client(pipeline, "2001:db8:1:2::10") as six,
        _client(pipeline, "2001:db8:1:2:ffff::1") as six_again,
    ):
        answers = await asyncio.gather(
            *(one.post(RECEIVER, content=body, headers=_headers(WRONG, i)) for i in ids[:4]),
            one.post(RECEIVER, content=body, headers=_headers(None, ids[4])),
            six.post(RECEIVER, content=body, headers=_headers(WRONG, "six-1")),
            six_again.post(RECEIVER, content=body, headers=_headers("sha256=nothex", "six-2")),
        )
    assert [a.status_code for a in answers] == [401] * 7
    # Nothing reaches the audit outbox per request ...
    assert await _rejection_events(pipeline) == []
    # ... the interval's flush writes one event per source (an IPv6 /64 is one source).
    assert await _flush(pipeline) == 2
    events = {e["ip"]: e for e in await _rejection_events(pipeline)}
    assert set(events) == {"198.51.100.7", "2001:db8:1:2::/64"}
    ipv4 = events["198.51.100.7"]["data"]
    assert ipv4["rejected"] == 5
    assert ipv4["reasons"] == {"missing_signature": 1, "wrong_signature": 4}
    assert ipv4["events"] == {"push": 5}
    assert sorted(ipv4["delivery_ids"]) == sorted(ids[:5])
    assert ipv4["first_at"] <= ipv4["last_at"]
    assert events["2001:db8:1:2::/64"]["data"]["rejected"] == 2
    # A flush with nothing new writes nothing; the next rejection starts a new tally.
    assert await _flush(pipeline) == 0
    await pipeline.deliver("push", body, secret="not-the-secret-0123456789abcdef")
    await _flush(pipeline)
    assert len(await _rejection_events(pipeline)) == 3


async def test_tallies_are_audited_every_interval_and_at_shutdown(
    backend: dict[str, Any],
) -> None:
    settings = Settings(
        **backend,
        log_json=False,
        github_webhook_secrets=WEBHOOK_SECRET,
        webhook_rejection_audit_interval_seconds=1,
    )
    app = create_app(settings)
    headers = _headers(WRONG, "periodic")
    async with running_app(app) as client:
        assert (await client.post(RECEIVER, content=b"{}", headers=headers)).status_code == 401
        deadline = time.monotonic() + ANSWER_WITHIN
        async with app.state.resources.sessionmaker() as session:
            while not await session.scalar(
                select(OutboxEvent.id).where(OutboxEvent.event_type == REJECTED)
            ):
                assert time.monotonic() < deadline, "the periodic audit never ran"
                await asyncio.sleep(0.1)
        # One more, stopping before the next interval: written on the way out.
        headers = _headers(WRONG, "at-shutdown")
        assert (await client.post(RECEIVER, content=b"{}", headers=headers)).status_code == 401
    # The app has stopped (its engine is closed): read what it left in its database.
    reopened = create_async_engine(settings.database_url)
    try:
        async with async_sessionmaker(reopened)() as session:
            rows = await session.scalars(
                select(OutboxEvent).where(OutboxEvent.event_type == REJECTED)
            )
            ids = sorted(i for row in rows for i in json.loads(row.payload)["data"]["delivery_ids"])
    finally:
        await reopened.dispose()
    assert ids == ["at-shutdown", "periodic"]


@pytest.fixture
async def strict(pipeline_factory: Callable[..., Any]) -> PipelineHarness:
    harness: PipelineHarness = await pipeline_factory(
        rate_limit_webhook_signature_failures="3/minute",
        webhook_body_read_deadline_seconds=0.5,
    )
    return harness


@pytest.fixture
async def patient(pipeline_factory: Callable[..., Any]) -> PipelineHarness:
    """A long body read deadline: only a flagged source's reads are cut short."""
    harness: PipelineHarness = await pipeline_factory(
        rate_limit_webhook_signature_failures="3/minute",
        webhook_body_read_deadline_seconds=60,
    )
    return harness


async def test_a_source_past_its_failure_limit_is_limited_before_its_body_is_read(
    patient: PipelineHarness,
) -> None:
    body = fixture_body("push")
    signed = _headers(sign(WEBHOOK_SECRET, body))
    async with _client(patient, "203.0.113.9") as source, _client(patient, "192.0.2.1") as other:
        for _ in range(4):  # the 4th is over the limit: the source is flagged from then on
            rejected = await source.post(RECEIVER, content=body, headers=_headers(WRONG))
            assert rejected.status_code == 401, rejected.text
        # Uploads that would never finish: a few are read at once (each cut short, well
        # before the 60 s deadline), the rest answered at once, their body unread.
        started = time.monotonic()
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(
                    source.post(RECEIVER, content=_endless_body(), headers=_headers(WRONG))
                    for _ in range(FLAGGED_CONCURRENT_READS + 4)
                )
            ),
            ANSWER_WITHIN,
        )
        assert time.monotonic() - started < FLAGGED_BODY_READ_SECONDS + 3
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [408] * FLAGGED_CONCURRENT_READS + [429] * 4
        throttled = next(a for a in answers if a.status_code == 429)
        assert throttled.headers["content-type"] == "application/problem+json"
        assert throttled.json()["code"] == "webhook_source_throttled"
        assert throttled.headers["Retry-After"] == "1"
        assert throttled.headers["connection"] == "close"
        # Signed deliveries keep the ingest contract, from the flagged source too (GitHub
        # delivers everyone's webhooks from the same addresses) and from any other.
        for client in (source, other, source):
            accepted = await client.post(RECEIVER, content=body, headers=dict(signed))
            assert accepted.status_code == 202, accepted.text
            signed = _headers(sign(WEBHOOK_SECRET, body))
    await _flush(patient)
    (event,) = [e for e in await _rejection_events(patient) if e["ip"] == "203.0.113.9"]
    data = event["data"]
    assert (data["rejected"], data["throttled"]) == (4 + FLAGGED_CONCURRENT_READS, 4)
    assert data["reasons"] == {
        "body_read_deadline": FLAGGED_CONCURRENT_READS,
        "wrong_signature": 4,
    }
    metrics = (await patient.client.get("/metrics")).text
    assert 'flightdeck_webhook_deliveries_total{event="push",result="throttled"}' in metrics
    assert "flightdeck_webhook_throttled_total " in metrics  # process-wide: no exact count


async def test_a_slow_upload_is_cut_at_the_body_read_deadline(strict: PipelineHarness) -> None:
    async with _client(strict, "203.0.113.50") as slow:
        started = time.monotonic()
        cut = await asyncio.wait_for(
            slow.post(RECEIVER, content=_endless_body(), headers=_headers(WRONG, "slow-1")),
            ANSWER_WITHIN,
        )
        took = time.monotonic() - started
        assert cut.status_code == 408, cut.text
        assert cut.json()["code"] == "body_read_deadline"
        assert cut.headers["connection"] == "close"
        assert took < 5, took
        # A missing signature header is refused before the body too.
        unsigned = await asyncio.wait_for(
            slow.post(RECEIVER, content=_endless_body(), headers=_headers(None)), ANSWER_WITHIN
        )
        assert unsigned.status_code == 401
    await _flush(strict)
    (event,) = [e for e in await _rejection_events(strict) if e["ip"] == "203.0.113.50"]
    assert event["data"]["reasons"] == {"body_read_deadline": 1, "missing_signature": 1}
    # A signed delivery whose body arrives in time is accepted as always.
    accepted = await strict.deliver("push", fixture_body("push"))
    assert accepted.status_code == 202, accepted.text


async def test_a_failed_audit_write_keeps_the_tallies_for_the_next_flush(
    pipeline: PipelineHarness,
) -> None:
    body = fixture_body("push")
    async with _client(pipeline, "198.51.100.20") as source:
        for delivery in ("before-1", "before-2"):
            await source.post(RECEIVER, content=body, headers=_headers(WRONG, delivery))
        rejections = pipeline.app.state.webhook_signature_rejections
        # The write fails: a database that refuses the outbox insert (its table is gone).
        engine = pipeline.app.state.resources.engine
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE outbox RENAME TO outbox_away"))
        try:
            with pytest.raises(DBAPIError):
                await _flush(pipeline)
            await source.post(RECEIVER, content=body, headers=_headers(WRONG, "during"))
        finally:
            async with engine.begin() as connection:
                await connection.execute(text("ALTER TABLE outbox_away RENAME TO outbox"))
        assert rejections.pending() == 1
    assert await _flush(pipeline) == 1
    (event,) = await _rejection_events(pipeline)
    assert event["data"]["rejected"] == 3
    assert event["data"]["delivery_ids"] == ["before-1", "before-2", "during"]
