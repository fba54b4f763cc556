"""``GET /admin/audit-events/stream`` over real HTTP: resume, follow, filters, replicas."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import pytest

from flightdeck_common.auth.claims import Role
from flightdeck_common.auth.revocation import MemoryRevocations

pytestmark = pytest.mark.timeout(60)

LiveAdmin = Any


async def test_resumes_after_last_event_id_then_delivers_new_events(
    live_admin_factory: Any, database_url: str, new_event: Any
) -> None:
    admin: LiveAdmin = await live_admin_factory(database_url)
    events = [new_event() for _ in range(3)]
    assert (await admin.ingest(events)).status_code == 200

    async with admin.stream(last_event_id=1) as reader:
        assert reader.response.headers["content-type"] == "text/event-stream"
        opening = await reader.next_message()
        assert opening is not None
        assert (opening.retry, opening.id, opening.data) == (3000, "1", None)
        replayed = [await reader.next_event() for _ in range(2)]
        assert [(e.id, e.event) for e in replayed] == [("2", "audit"), ("3", "audit")]
        item = json.loads(replayed[0].data or "")
        assert (item["seq"], item["id"], item["data"]) == (2, events[1]["id"], events[1]["data"])
        assert len(item["hash"]) == len(item["prev_hash"]) == 64

        later = new_event(type="auth.login.succeeded")
        assert (await admin.ingest([later])).status_code == 200
        live = await reader.next_event()
        assert live.id == "4"
        assert json.loads(live.data or "")["id"] == later["id"]

    # ?after= for clients that cannot set the header; the header wins over it.
    async with admin.stream(params={"after": 3}) as reader:
        assert (await reader.next_event()).id == "4"
    async with admin.stream(params={"after": 0}, last_event_id=3) as reader:
        assert (await reader.next_event()).id == "4"


async def test_a_new_client_starts_at_the_end_of_the_chain(
    live_admin_factory: Any, sqlite_database_url: str, new_event: Any
) -> None:
    admin: LiveAdmin = await live_admin_factory(sqlite_database_url)
    await admin.ingest([new_event(), new_event()])
    async with admin.stream() as reader:
        opening = await reader.next_message()
        assert opening is not None
        assert opening.id == "2"
        await admin.ingest([new_event()])
        assert (await reader.next_event()).id == "3"

    # A position beyond the chain (a restored database) starts at its end.
    async with admin.stream(last_event_id=99) as reader:
        opening = await reader.next_message()
        assert opening is not None
        assert opening.id == "3"


async def test_filters_by_type_and_service(
    live_admin_factory: Any, sqlite_database_url: str, new_event: Any
) -> None:
    admin: LiveAdmin = await live_admin_factory(sqlite_database_url)
    await admin.ingest(
        [
            new_event(type="auth.login.failed", service="auth"),
            new_event(type="pipeline.run.created", service="pipeline"),
            new_event(type="auth.login.succeeded", service="auth"),
            new_event(type="auth.login.failed", service="auth"),
        ]
    )
    async with admin.stream(last_event_id=0, params={"type": "auth.login.failed"}) as reader:
        assert [(await reader.next_event()).id for _ in range(2)] == ["1", "4"]
    async with admin.stream(last_event_id=0, params={"service": "pipeline"}) as reader:
        assert (await reader.next_event()).id == "2"
        await admin.ingest([new_event(service="auth"), new_event(service="pipeline")])
        assert (await reader.next_event()).id == "6"


async def test_bad_resume_positions_are_422(
    live_admin_factory: Any, sqlite_database_url: str
) -> None:
    admin: LiveAdmin = await live_admin_factory(sqlite_database_url)
    for headers, params in (
        ({"Last-Event-ID": "abc"}, {}),
        ({"Last-Event-ID": "-1"}, {}),
        ({}, {"after": str(2**63)}),
        ({}, {"type": "a\x00b"}),
    ):
        response = await admin.client.get(
            "/admin/audit-events/stream",
            params=params,
            headers={**admin.admin_headers(), **headers},
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"


async def test_an_event_appended_on_one_replica_reaches_a_client_of_another(
    live_admin_factory: Any, postgres_database_url: str, new_event: Any
) -> None:
    replica_a: LiveAdmin = await live_admin_factory(postgres_database_url)
    replica_b: LiveAdmin = await live_admin_factory(postgres_database_url)
    async with replica_b.stream() as reader:
        await reader.next_message()
        for n in range(3):
            event = new_event()
            assert (await replica_a.ingest([event])).status_code == 200
            received = await reader.next_event(within=2.0)
            assert (received.id, json.loads(received.data or "")["id"]) == (str(n + 1), event["id"])


async def test_streamed_events_match_the_documented_event_schema(
    live_admin_factory: Any, sqlite_database_url: str, new_event: Any
) -> None:
    """Fuzz finding: the 200 was documented as ``{"type": "string"}``, and schemathesis,
    reading an event stream's schema as one event (OpenAPI 3.2), found every event "not of
    type string" (``GET /admin/audit-events/stream`` with ``Last-Event-ID: 0``). Each event
    now matches the documented event, its ``data`` the ``AuditEventRead`` schema."""
    admin: LiveAdmin = await live_admin_factory(sqlite_database_url)
    assert (await admin.ingest([new_event()])).status_code == 200
    openapi = admin.app.openapi()
    responses = openapi["paths"]["/admin/audit-events/stream"]["get"]["responses"]
    event_schema = responses["200"]["content"]["text/event-stream"]["schema"]
    components = {"components": openapi["components"]}

    async with admin.stream(last_event_id=0) as reader:
        event = await reader.next_event()

    assert event.as_dispatched()["event"] == "audit"
    jsonschema.validate(event.as_dispatched(), {**event_schema, **components})
    assert event_schema["properties"]["data"]["contentMediaType"] == "application/json"
    data_schema = event_schema["properties"]["data"]["contentSchema"]
    jsonschema.validate(json.loads(event.data or ""), {**data_schema, **components})


async def test_the_stream_ends_once_its_admin_is_revoked(
    live_admin_factory: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revocation (logout, password change, deactivation) is checked at every heartbeat
    interval: a stream does not outlive it until the token expires."""
    monkeypatch.setattr("flightdeck_admin.audit.router.HEARTBEAT_SECONDS", 0.2)
    denylist = MemoryRevocations()
    admin: LiveAdmin = await live_admin_factory(database_url, denylist)
    victim = admin.minter.user_token(role=Role.ADMIN, username="victim", sub="31")
    other = admin.minter.user_token(role=Role.ADMIN, username="other", sub="32")
    async with (
        admin.stream(headers={"Authorization": f"Bearer {victim}"}) as revoked,
        admin.stream(headers={"Authorization": f"Bearer {other}"}) as kept,
    ):
        assert await revoked.next_message() is not None  # the opening retry/id
        assert await kept.next_message() is not None
        for _ in range(3):
            ping = await revoked.next_message(within=2.0)
            assert ping is not None
            assert ping.comments == ["ping"]
        await denylist.revoke_subject("31", time.time(), 900)
        started = time.monotonic()
        while await revoked.next_message(within=3.0) is not None:
            assert time.monotonic() - started < 3.0, "the revoked admin's stream went on"
        ping = await kept.next_message(within=2.0)
        assert ping is not None
        assert ping.comments == ["ping"]
