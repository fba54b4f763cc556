"""``GET /pipelines/events`` over real HTTP: new changes, resume, replicas, heartbeat, reset,
rollback, filters, expiry, disconnects, auth and the documented schema."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import jsonschema
import pytest

from flightdeck_common.devstack.ports import free_port
from flightdeck_pipeline.events.publish import record_change

pytestmark = pytest.mark.timeout(30)


def payload(message: Any) -> dict[str, Any]:
    assert message.data is not None
    data: dict[str, Any] = json.loads(message.data)
    return data


async def test_connected_client_receives_a_change_committed_after_it_connected(
    live_app_factory: Any, events_backend: Any
) -> None:
    live = await live_app_factory(events_backend.database_url, events_backend.redis_url)
    earlier = await live.record("run.updated", {"id": 1, "status": "queued"})

    async with live.stream() as reader:
        assert reader.response.headers["content-type"] == "text/event-stream"
        assert reader.response.headers["cache-control"] == "no-cache"
        assert reader.response.headers["x-accel-buffering"] == "no"
        opening = await reader.next_message()
        assert opening is not None
        # Starts at the newest event (only new changes), and says so: a reconnect resumes here.
        assert (opening.retry, opening.id, opening.data) == (3000, str(earlier), None)

        later = await live.record("run.updated", {"id": 1, "status": "running"})
        event = await reader.next_event()
        assert (event.id, event.event) == (str(later), "run.updated")
        assert payload(event) == {"id": 1, "status": "running"}


async def test_reconnecting_with_last_event_id_replays_exactly_the_missed_events(
    live_app_factory: Any, events_backend: Any
) -> None:
    live = await live_app_factory(events_backend.database_url, events_backend.redis_url)
    async with live.stream() as reader:
        await reader.next_message()
        seen = await live.record("run.updated", {"n": 0})
        assert (await reader.next_event()).id == str(seen)

    missed = [
        await live.record("run.updated", {"n": 1}),
        await live.record("deployment.updated", {"n": 2}),
        await live.record("run.updated", {"n": 3}),
    ]
    async with live.stream(last_event_id=seen) as reader:
        replayed = [await reader.next_event() for _ in missed]
        assert [int(e.id) for e in replayed] == missed
        assert [e.event for e in replayed] == ["run.updated", "deployment.updated", "run.updated"]
        assert [payload(e)["n"] for e in replayed] == [1, 2, 3]
        # ...then it follows live.
        new = await live.record("run.updated", {"n": 4})
        assert (await reader.next_event()).id == str(new)

    # Clients that cannot set headers resume with ?last_event_id=; the header wins.
    async with live.stream(params={"last_event_id": missed[1]}) as reader:
        assert payload(await reader.next_event())["n"] == 3
    async with live.stream(
        params={"last_event_id": 0}, headers={"Last-Event-ID": str(missed[1])}
    ) as reader:
        assert payload(await reader.next_event())["n"] == 3


async def test_change_committed_on_one_replica_is_pushed_to_a_client_of_another(
    live_app_factory: Any, postgres_database_url: str, redis_url: str
) -> None:
    # The pollers are slowed down: only Redis pub/sub can be this fast.
    replica_a = await live_app_factory(postgres_database_url, redis_url, poll_interval=60)
    replica_b = await live_app_factory(postgres_database_url, redis_url, poll_interval=60)
    for replica in (replica_a, replica_b):
        async with asyncio.timeout(3):
            await replica.bus.subscribed.wait()

    async with replica_b.stream() as reader:
        await reader.next_message()
        for n in range(3):
            started = time.monotonic()
            change_id = await replica_a.record("deployment.updated", {"n": n})
            event = await reader.next_event(within=3.0)
            assert (event.id, payload(event)) == (str(change_id), {"n": n})
            assert time.monotonic() - started < 3.0  # pushed, not the 60 s poll


async def test_concurrent_writers_reach_the_stream_complete_and_in_order(
    live_app_factory: Any, postgres_database_url: str, redis_url: str
) -> None:
    live = await live_app_factory(postgres_database_url, redis_url)
    writers = 20

    async def write(n: int) -> None:
        async with live.sessionmaker() as session:
            await record_change(session, live.bus, "run.updated", {"n": n})
            await asyncio.sleep(random.uniform(0, 0.05))  # the rest of the request's work
            await session.commit()

    async with live.stream() as reader:
        await reader.next_message()
        await asyncio.gather(*(write(n) for n in range(writers)))
        events = [await reader.next_event() for _ in range(writers)]
    ids = [int(event.id) for event in events if event.id is not None]
    assert ids == sorted(set(ids))
    assert len(ids) == writers
    assert sorted(payload(event)["n"] for event in events) == list(range(writers))


async def test_replicas_catch_up_by_polling_while_redis_is_down(
    live_app_factory: Any, postgres_database_url: str, bus_log: list[Any]
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    replica_a = await live_app_factory(postgres_database_url, dead_redis, poll_interval=0.3)
    replica_b = await live_app_factory(postgres_database_url, dead_redis, poll_interval=0.3)

    async with replica_b.stream() as reader:
        await reader.next_message()
        first = await replica_a.record("run.updated", {"n": 1})
        assert (await reader.next_event(within=2.0)).id == str(first)
        await asyncio.sleep(0.5)  # several reconnect attempts
        second = await replica_a.record("run.updated", {"n": 2})
        assert (await reader.next_event(within=2.0)).id == str(second)

    lost = [r for r in bus_log if "subscription lost" in r.getMessage()]
    assert len(lost) == 2  # one warning per replica, however many reconnects failed
    assert {r.levelname for r in lost} == {"WARNING"}


async def test_heartbeat_comment_arrives_while_idle(
    live_app_factory: Any, sqlite_database_url: str
) -> None:
    live = await live_app_factory(sqlite_database_url, sse_heartbeat_seconds=0.2)
    async with live.stream() as reader:
        await reader.next_message()
        # The configured 0.2 s, not the 15 s default (with room for a loaded machine).
        ping = await reader.next_message(within=2.0)
        assert ping is not None
        assert (ping.comments, ping.data, ping.id) == (["ping"], None, None)


async def test_client_further_behind_than_the_replay_limit_gets_a_reset(
    live_app_factory: Any, database_url: str
) -> None:
    live = await live_app_factory(database_url, sse_replay_limit=3)
    ids = [await live.record("run.updated", {"n": n}) for n in range(5)]

    # Exactly the limit behind: replayed.
    async with live.stream(last_event_id=ids[1]) as reader:
        assert [int((await reader.next_event()).id) for _ in range(3)] == ids[2:]

    # One more: a reset pointing at the newest event, then live events.
    async with live.stream(last_event_id=ids[0]) as reader:
        reset = await reader.next_event()
        assert (reset.event, reset.id) == ("reset", str(ids[-1]))
        assert payload(reset) == {"reason": "replay_limit_exceeded", "last_event_id": ids[-1]}
        new = await live.record("run.updated", {"n": 5})
        event = await reader.next_event()
        assert (event.id, event.event) == (str(new), "run.updated")

    # A position this database never had (restored or recreated): reset too.
    async with live.stream(last_event_id=10_000) as reader:
        reset = await reader.next_event()
        assert reset.event == "reset"
        assert payload(reset)["reason"] == "position_unavailable"


async def test_a_rolled_back_change_produces_no_event(
    live_app_factory: Any, events_backend: Any
) -> None:
    live = await live_app_factory(events_backend.database_url, events_backend.redis_url)
    async with live.stream() as reader:
        await reader.next_message()
        async with live.sessionmaker() as session:
            await record_change(session, live.bus, "run.updated", {"state": "rolled back"})
            await session.rollback()
        async with live.sessionmaker() as session, session.begin():
            async with session.begin_nested() as savepoint:
                await record_change(session, live.bus, "run.updated", {"state": "savepoint"})
                await savepoint.rollback()
            await record_change(session, live.bus, "run.updated", {"state": "committed"})

        event = await reader.next_event()
        assert payload(event) == {"state": "committed"}
        # Nothing else is pending: the next message is a heartbeat.
        ping = await reader.next_message()
        assert ping is not None
        assert ping.comments == ["ping"]


async def test_kind_filter_sends_only_the_requested_kinds(
    live_app_factory: Any, sqlite_database_url: str
) -> None:
    live = await live_app_factory(sqlite_database_url)
    async with live.stream(params={"kind": "deployment.updated"}) as reader:
        await reader.next_message()
        await live.record("run.updated", {"n": 1})
        wanted = await live.record("deployment.updated", {"n": 2})
        event = await reader.next_event()
        assert (event.id, event.event) == (str(wanted), "deployment.updated")

    bad = await live.client.get(
        "/pipelines/events", params={"kind": "Run Updated"}, headers=live.headers()
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


async def test_stream_ends_when_the_access_token_expires(
    live_app_factory: Any, sqlite_database_url: str
) -> None:
    live = await live_app_factory(sqlite_database_url, sse_heartbeat_seconds=5)
    short_lived = live.headers(ttl=0.5)
    started = time.monotonic()
    async with live.stream(headers=short_lived) as reader:
        await reader.next_message()
        assert await reader.next_message(within=3.0) is None
    assert 0.3 < time.monotonic() - started < 2.5


async def test_client_disconnect_ends_the_stream_on_the_server(
    live_app_factory: Any, sqlite_database_url: str
) -> None:
    live = await live_app_factory(sqlite_database_url, sse_heartbeat_seconds=30)
    async with live.stream() as reader:
        await reader.next_message()
        assert len(live.server.server_state.tasks) == 1
    await live.wait_for_no_requests(within=2)


async def test_stream_requires_a_viewer_token_and_a_valid_position(
    live_app_factory: Any, sqlite_database_url: str
) -> None:
    live = await live_app_factory(sqlite_database_url)
    anonymous = await live.client.get("/pipelines/events")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"

    for position in ("abc", "-1", str(2**31)):
        response = await live.client.get(
            "/pipelines/events", headers={**live.headers(), "Last-Event-ID": position}
        )
        assert response.status_code == 422, position


async def test_openapi_documents_an_event_stream(
    live_app_factory: Any, sqlite_database_url: str
) -> None:
    live = await live_app_factory(sqlite_database_url)
    schema = (await live.client.get("/pipelines/openapi.json")).json()
    operation = schema["paths"]["/pipelines/events"]["get"]
    assert operation["operationId"] == "stream_events"
    assert operation["tags"] == ["events"]
    assert operation["description"].startswith("Stream run and deployment changes")
    responses = operation["responses"]
    assert list(responses["200"]["content"]) == ["text/event-stream"]
    for status in ("401", "403", "422", "503"):
        assert list(responses[status]["content"]) == ["application/problem+json"], status
    parameters = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert {("header", "Last-Event-ID"), ("query", "last_event_id"), ("query", "kind")} <= (
        parameters
    )
    assert operation["security"]


async def test_streamed_events_match_the_documented_event_schema(
    live_app_factory: Any, sqlite_database_url: str
) -> None:
    """Fuzz finding: the 200 was documented as ``{"type": "string"}``, and schemathesis,
    reading an event stream's schema as one event (OpenAPI 3.2), found every event "not of
    type string" (``GET /pipelines/events``). Each event now matches the documented one."""
    live = await live_app_factory(sqlite_database_url)
    openapi = (await live.client.get("/pipelines/openapi.json")).json()
    responses = openapi["paths"]["/pipelines/events"]["get"]["responses"]
    event_schema = responses["200"]["content"]["text/event-stream"]["schema"]
    first = await live.record("run.updated", {"id": 1, "status": "queued"})
    await live.record("run.updated", {"id": 1, "status": "running"})

    async with live.stream(last_event_id=first) as reader:
        event = await reader.next_event()

    jsonschema.validate(event.as_dispatched(), event_schema)
    assert event.as_dispatched()["event"] == "run.updated"
    assert event_schema["properties"]["data"]["contentMediaType"] == "application/json"
    assert payload(event) == {"id": 1, "status": "running"}
