"""The deliveries API: operators read the stored deliveries (never their bodies), admins
set them back to pending to be mapped again (audited, in the same transaction).

Deliveries are seeded as rows, not through the receiver. A mapping worker may run in the
app: it takes pending deliveries whose ``retry_at`` is past, so pending seeds carry a
``retry_at`` far ahead (left alone), and what a test reprocesses is asserted as "pending,
or mapped again since" — true with or without a worker, false when nothing was done.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from flightdeck_common.auth.claims import Role
from flightdeck_pipeline.webhooks import deliveries_service
from flightdeck_pipeline.webhooks.deliveries_schemas import DeliveryResult
from flightdeck_pipeline.webhooks.models import RESULTS, Delivery

from ..conftest import FIXTURES, PipelineHarness
from . import stored_deliveries
from .stored_deliveries import (
    NOT_BEFORE,
    RUN_BODY,
    SEEDED_AT,
    T0,
    UNMAPPABLE_RUN,
    audit_payloads,
    seed,
    seeded_delivery,
    stored,
)

BASE = "/pipelines/webhooks/deliveries"
PUSH_BODY = (FIXTURES / "push" / "payload.json").read_bytes()
SEEDED_ERROR = "MappingError: seeded by the test"

READ_FIELDS = {
    "delivery_id",
    "event",
    "action",
    "result",
    "error",
    "attempts",
    "received_at",
    "processed_at",
    "retry_at",
    "body_size",
}


def _delivery(delivery_id: str, **fields: Any) -> Delivery:
    body = fields.pop("body", RUN_BODY)
    return seeded_delivery(delivery_id, body=body, error=SEEDED_ERROR, **fields)


def assert_reprocessed(row: Delivery) -> None:
    stored_deliveries.assert_reprocessed(row, SEEDED_ERROR)


audit_events = audit_payloads


def assert_untouched(row: Delivery, result: str) -> None:
    assert row.result == result
    assert row.processed_at == SEEDED_AT
    if result == "failed":
        assert row.error == SEEDED_ERROR


async def list_ids(harness: PipelineHarness, **params: Any) -> list[str]:
    response = await harness.client.get(BASE, params=params, headers=harness.headers(Role.OPERATOR))
    assert response.status_code == 200, response.text
    return [item["delivery_id"] for item in response.json()["items"]]


# -- reading ------------------------------------------------------------------------------


def test_api_results_are_the_stored_ones() -> None:
    assert {r.value for r in DeliveryResult} == set(RESULTS)


async def test_list_filters_by_result_event_and_time(pipeline: PipelineHarness) -> None:
    await seed(
        pipeline,
        _delivery("run-failed-old", received_at=T0 - timedelta(days=2)),
        _delivery("run-processed", result="processed"),
        _delivery("push-failed", event="push", action=None, body=PUSH_BODY),
        _delivery("push-ignored", event="push", result="ignored"),
        _delivery("run-pending", result="pending", received_at=T0 + timedelta(hours=1)),
        _delivery("run-failed-new", received_at=T0 + timedelta(hours=2)),
    )
    everything = await list_ids(pipeline)
    assert everything == [
        "run-failed-new",
        "run-pending",
        "push-ignored",
        "push-failed",
        "run-processed",
        "run-failed-old",
    ]
    assert await list_ids(pipeline, result="failed") == [
        "run-failed-new",
        "push-failed",
        "run-failed-old",
    ]
    assert await list_ids(pipeline, result="pending") == ["run-pending"]
    assert await list_ids(pipeline, event="push") == ["push-ignored", "push-failed"]
    assert await list_ids(pipeline, since=T0.isoformat()) == everything[:-1]
    in_paris = T0.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert await list_ids(pipeline, since=in_paris) == everything[:-1]
    assert await list_ids(
        pipeline, result="failed", event="workflow_run", since=T0.isoformat()
    ) == ["run-failed-new"]
    assert await list_ids(pipeline, until=(T0 + timedelta(hours=1)).isoformat()) == everything[2:]
    assert await list_ids(pipeline, event="deployment") == []


async def test_list_pages_by_keyset_without_gaps_or_duplicates(pipeline: PipelineHarness) -> None:
    await seed(pipeline, *(_delivery(f"d-{n:02d}", result="processed") for n in range(11)))
    expected = [f"d-{n:02d}" for n in reversed(range(11))]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = (
            await pipeline.client.get(BASE, params=params, headers=pipeline.headers(Role.OPERATOR))
        ).json()
        seen += [item["delivery_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (expected, 3)
    # Rows arriving meanwhile do not shift the pages already handed out.
    first = (
        await pipeline.client.get(
            BASE, params={"limit": 4}, headers=pipeline.headers(Role.OPERATOR)
        )
    ).json()
    await seed(pipeline, _delivery("d-late", result="processed"))
    second = (
        await pipeline.client.get(
            BASE,
            params={"limit": 4, "cursor": first["next_cursor"]},
            headers=pipeline.headers(Role.OPERATOR),
        )
    ).json()
    assert [i["delivery_id"] for i in second["items"]] == expected[4:8]


async def test_items_carry_the_body_size_never_the_body(pipeline: PipelineHarness) -> None:
    await seed(
        pipeline,
        _delivery("with-run-body"),
        _delivery("with-push-body", event="push", result="processed", body=PUSH_BODY),
    )
    listed = await pipeline.client.get(BASE, headers=pipeline.headers(Role.OPERATOR))
    items = {item["delivery_id"]: item for item in listed.json()["items"]}
    assert set(items["with-run-body"]) == READ_FIELDS
    assert items["with-run-body"]["body_size"] == len(RUN_BODY)
    assert items["with-push-body"]["body_size"] == len(PUSH_BODY)

    one = await pipeline.client.get(
        f"{BASE}/with-run-body", headers=pipeline.headers(Role.OPERATOR)
    )
    assert one.status_code == 200, one.text
    assert one.json() == items["with-run-body"]
    assert one.json() | {"received_at": None, "processed_at": None} == {
        "delivery_id": "with-run-body",
        "event": "workflow_run",
        "action": "completed",
        "result": "failed",
        "error": SEEDED_ERROR,
        "attempts": 1,
        "received_at": None,
        "processed_at": None,
        "retry_at": None,
        "body_size": len(RUN_BODY),
    }
    assert datetime.fromisoformat(one.json()["received_at"]) == T0


async def test_unknown_delivery_is_a_404_problem(pipeline: PipelineHarness) -> None:
    for method, path in (("GET", f"{BASE}/no-such-delivery"), ("POST", f"{BASE}/nope/reprocess")):
        response = await pipeline.client.request(method, path, headers=pipeline.headers(Role.ADMIN))
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "delivery_not_found"


# -- access -------------------------------------------------------------------------------


async def test_operators_read_admins_reprocess(pipeline: PipelineHarness) -> None:
    await seed(pipeline, _delivery("guarded"))
    reads = [("GET", BASE), ("GET", f"{BASE}/guarded")]
    writes = [("POST", f"{BASE}/guarded/reprocess"), ("POST", f"{BASE}/reprocess")]
    for method, path in reads + writes:
        anonymous = await pipeline.client.request(method, path, json={})
        assert anonymous.status_code == 401, (method, path)
        viewer = await pipeline.client.request(
            method, path, json={}, headers=pipeline.headers(Role.VIEWER)
        )
        assert viewer.status_code == 403, (method, path)
    for method, path in reads:
        operator = await pipeline.client.request(
            method, path, headers=pipeline.headers(Role.OPERATOR)
        )
        assert operator.status_code == 200, (method, path)
    for method, path in writes:
        operator = await pipeline.client.request(
            method, path, json={}, headers=pipeline.headers(Role.OPERATOR)
        )
        assert operator.status_code == 403, (method, path)
    assert_untouched(await stored(pipeline, "guarded"), "failed")
    assert await audit_events(pipeline, "pipeline.webhook.delivery_reprocessed") == []


# -- reprocessing one ---------------------------------------------------------------------


async def test_admin_reprocesses_a_failed_delivery(pipeline: PipelineHarness) -> None:
    await seed(pipeline, _delivery("redo-me", attempts=3), _delivery("bystander"))
    response = await pipeline.client.post(
        f"{BASE}/redo-me/reprocess", headers=pipeline.headers(Role.ADMIN)
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["delivery_id"], answer["result"], answer["error"]) == (
        "redo-me",
        "pending",
        None,
    )
    assert (answer["processed_at"], answer["retry_at"], answer["attempts"]) == (None, None, 3)
    assert answer["body_size"] == len(RUN_BODY)
    # A valid payload: pending, or already mapped again by a worker.
    row = await stored(pipeline, "redo-me")
    assert_reprocessed(row)
    assert row.error is None
    assert row.attempts >= 3
    assert_untouched(await stored(pipeline, "bystander"), "failed")

    [event] = await audit_events(pipeline, "pipeline.webhook.delivery_reprocessed")
    assert (event["actor"], event["subject"], event["service"]) == (
        "admin-user",
        "redo-me",
        "pipeline",
    )
    assert event["data"] == {
        "delivery_id": "redo-me",
        "event": "workflow_run",
        "previous_result": "failed",
    }


@pytest.mark.parametrize("previous", ["processed", "ignored"])
async def test_finished_deliveries_can_be_reprocessed(
    pipeline: PipelineHarness, previous: str
) -> None:
    await seed(pipeline, _delivery("again", result=previous, body=UNMAPPABLE_RUN))
    response = await pipeline.client.post(
        f"{BASE}/again/reprocess", headers=pipeline.headers(Role.ADMIN)
    )
    assert response.status_code == 202, response.text
    assert response.json()["result"] == "pending"
    assert_reprocessed(await stored(pipeline, "again"))
    [event] = await audit_events(pipeline, "pipeline.webhook.delivery_reprocessed")
    assert event["data"]["previous_result"] == previous


async def test_a_pending_delivery_is_a_409(pipeline: PipelineHarness) -> None:
    await seed(pipeline, _delivery("waiting", result="pending"))
    response = await pipeline.client.post(
        f"{BASE}/waiting/reprocess", headers=pipeline.headers(Role.ADMIN)
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "delivery_pending"
    row = await stored(pipeline, "waiting")
    assert (row.result, row.retry_at) == ("pending", NOT_BEFORE)
    assert await audit_events(pipeline, "pipeline.webhook.delivery_reprocessed") == []


async def test_reprocessing_twice_is_a_409_the_second_time(pipeline: PipelineHarness) -> None:
    await seed(pipeline, _delivery("twice", body=UNMAPPABLE_RUN))
    first = await pipeline.client.post(
        f"{BASE}/twice/reprocess", headers=pipeline.headers(Role.ADMIN)
    )
    assert first.status_code == 202
    second = await pipeline.client.post(
        f"{BASE}/twice/reprocess", headers=pipeline.headers(Role.ADMIN)
    )
    # 409 while it waits; a worker may have failed it again meanwhile (then: 202 again).
    if second.status_code == 409:
        assert second.json()["code"] == "delivery_pending"
    else:
        assert second.status_code == 202
        assert second.json()["result"] == "pending"


class RecordingWorker:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


async def test_reprocessing_wakes_the_worker_once_committed(
    pipeline: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = RecordingWorker()
    monkeypatch.setattr(pipeline.app.state, "delivery_worker", worker, raising=False)
    await seed(pipeline, _delivery("wake-1"), _delivery("wake-2", result="pending"))
    admin = pipeline.headers(Role.ADMIN)
    assert (
        await pipeline.client.post(f"{BASE}/wake-1/reprocess", headers=admin)
    ).status_code == 202
    assert worker.wakes == 1
    # Refused: nothing committed, nobody woken.
    assert (
        await pipeline.client.post(f"{BASE}/wake-2/reprocess", headers=admin)
    ).status_code == 409
    assert (
        await pipeline.client.post(f"{BASE}/wake-3/reprocess", headers=admin)
    ).status_code == 404
    assert worker.wakes == 1
    assert (
        await pipeline.client.post(f"{BASE}/reprocess", json={}, headers=admin)
    ).status_code == 202
    assert worker.wakes == 2


# -- reprocessing in bulk -----------------------------------------------------------------


async def test_bulk_reprocess_touches_only_the_matching_rows(pipeline: PipelineHarness) -> None:
    since = T0 - timedelta(hours=1)
    await seed(
        pipeline,
        _delivery("old-run", received_at=T0 - timedelta(days=1), body=UNMAPPABLE_RUN),
        _delivery("run-a", body=UNMAPPABLE_RUN),
        _delivery("run-b", received_at=T0 + timedelta(minutes=5), body=UNMAPPABLE_RUN),
        _delivery("push-a", event="push", body=PUSH_BODY),
        _delivery("run-done", result="processed"),
        _delivery("run-waiting", result="pending"),
    )
    response = await pipeline.client.post(
        f"{BASE}/reprocess",
        json={"event": "workflow_run", "since": since.isoformat()},
        headers=pipeline.headers(Role.ADMIN),
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"reprocessed": 2}
    for delivery_id in ("run-a", "run-b"):
        assert_reprocessed(await stored(pipeline, delivery_id))
    for delivery_id in ("old-run", "push-a"):
        assert_untouched(await stored(pipeline, delivery_id), "failed")
    assert_untouched(await stored(pipeline, "run-done"), "processed")
    waiting = await stored(pipeline, "run-waiting")
    assert (waiting.result, waiting.retry_at) == ("pending", NOT_BEFORE)

    [event] = await audit_events(pipeline, "pipeline.webhook.deliveries_reprocessed")
    assert event["actor"] == "admin-user"
    assert event["data"]["count"] == 2
    assert event["data"]["filter"] == {
        "result": "failed",
        "event": "workflow_run",
        "since": since.isoformat(),
        "until": None,
    }


async def test_bulk_reprocess_defaults_to_every_failed_delivery(pipeline: PipelineHarness) -> None:
    await seed(
        pipeline,
        _delivery("f-1", body=UNMAPPABLE_RUN),
        _delivery("f-2", event="push", body=PUSH_BODY, received_at=T0 - timedelta(days=3)),
        _delivery("ok", result="processed"),
        _delivery("skip", event="star", result="ignored"),
    )
    response = await pipeline.client.post(
        f"{BASE}/reprocess", json={}, headers=pipeline.headers(Role.ADMIN)
    )
    assert response.json() == {"reprocessed": 2}
    assert_reprocessed(await stored(pipeline, "f-1"))
    assert_reprocessed(await stored(pipeline, "f-2"))
    assert_untouched(await stored(pipeline, "ok"), "processed")
    assert_untouched(await stored(pipeline, "skip"), "ignored")

    ignored = await pipeline.client.post(
        f"{BASE}/reprocess",
        json={"result": "ignored", "until": T0.isoformat()},
        headers=pipeline.headers(Role.ADMIN),
    )
    assert ignored.json() == {"reprocessed": 0}  # received at T0, not before
    ignored = await pipeline.client.post(
        f"{BASE}/reprocess", json={"result": "ignored"}, headers=pipeline.headers(Role.ADMIN)
    )
    assert ignored.json() == {"reprocessed": 1}
    assert_reprocessed(await stored(pipeline, "skip"))
    counts = [
        e["data"]["count"]
        for e in await audit_events(pipeline, "pipeline.webhook.deliveries_reprocessed")
    ]
    assert sorted(counts) == [0, 1, 2]


async def test_bulk_reprocess_refuses_what_would_fill_the_backlog(
    pipeline_factory: Any,
) -> None:
    """Reprocessing must not take the backlog to its bound, where GitHub's own new
    deliveries would be refused: 2 pending + 3 matching against a bound of 5 is refused
    (409, nothing changed); against a bound of 6 it is done."""
    pipeline: PipelineHarness = await pipeline_factory(webhook_backlog_limit=5)
    await seed(
        pipeline,
        *(_delivery(f"queued-{n}", result="pending") for n in range(2)),
        *(_delivery(f"redo-{n}") for n in range(3)),
    )
    refused = await pipeline.client.post(
        f"{BASE}/reprocess", json={}, headers=pipeline.headers(Role.ADMIN)
    )
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert (problem["code"], problem["matched"], problem["room"]) == (
        "backlog_would_overflow",
        3,
        2,
    )
    for n in range(3):
        assert_untouched(await stored(pipeline, f"redo-{n}"), "failed")
    assert await audit_events(pipeline, "pipeline.webhook.deliveries_reprocessed") == []

    roomier: PipelineHarness = await pipeline_factory(webhook_backlog_limit=6)
    allowed = await roomier.client.post(
        f"{BASE}/reprocess", json={}, headers=roomier.headers(Role.ADMIN)
    )
    assert allowed.json() == {"reprocessed": 3}


async def test_bulk_reprocess_refuses_more_than_its_bound(
    pipeline: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliveries_service, "MAX_BULK_REPROCESS", 2)
    await seed(pipeline, *(_delivery(f"many-{n}") for n in range(3)))
    response = await pipeline.client.post(
        f"{BASE}/reprocess", json={}, headers=pipeline.headers(Role.ADMIN)
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert (problem["code"], problem["matched"], problem["limit"]) == ("too_many_deliveries", 3, 2)
    assert "3 deliveries match" in problem["detail"]
    for n in range(3):
        assert_untouched(await stored(pipeline, f"many-{n}"), "failed")
    assert await audit_events(pipeline, "pipeline.webhook.deliveries_reprocessed") == []
    narrowed = await pipeline.client.post(
        f"{BASE}/reprocess", json={"since": T0.isoformat()}, headers=pipeline.headers(Role.ADMIN)
    )
    assert narrowed.status_code == 422  # all three were received at T0
    monkeypatch.setattr(deliveries_service, "MAX_BULK_REPROCESS", 3)
    allowed = await pipeline.client.post(
        f"{BASE}/reprocess", json={}, headers=pipeline.headers(Role.ADMIN)
    )
    assert allowed.json() == {"reprocessed": 3}
    for n in range(3):
        assert_reprocessed(await stored(pipeline, f"many-{n}"))


async def test_fixed_paths_do_not_collide_with_delivery_ids(pipeline: PipelineHarness) -> None:
    """``/reprocess`` is the bulk route for POST; a delivery may still be named so."""
    await seed(pipeline, _delivery("reprocess", body=UNMAPPABLE_RUN))
    admin = pipeline.headers(Role.ADMIN)
    read = await pipeline.client.get(f"{BASE}/reprocess", headers=admin)
    assert (read.status_code, read.json()["delivery_id"]) == (200, "reprocess")
    one = await pipeline.client.post(f"{BASE}/reprocess/reprocess", headers=admin)
    assert (one.status_code, one.json()["delivery_id"]) == (202, "reprocess")
    bulk = await pipeline.client.post(f"{BASE}/reprocess", json={}, headers=admin)
    assert bulk.status_code == 202
    assert set(bulk.json()) == {"reprocessed"}


# -- malformed requests: 4xx problems, never a 500 ------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "bad%20id",
        "a" * 65,
        "abc%0A",
        "%C3%BCml%C3%A4ut",
        "semi;colon",
        "dot.ted",
        "%00",
    ],
)
async def test_malformed_delivery_ids_are_refused(pipeline: PipelineHarness, path: str) -> None:
    admin = pipeline.headers(Role.ADMIN)
    for method, url in (("GET", f"{BASE}/{path}"), ("POST", f"{BASE}/{path}/reprocess")):
        response = await pipeline.client.request(method, url, headers=admin)
        assert response.status_code == 422, (method, url, response.text)
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"result": "bogus"}, 422),
        ({"event": "Not-An-Event"}, 422),
        ({"event": "x" * 65}, 422),
        ({"since": "yesterday"}, 422),
        ({"since": "2026-12-01T00:00:00"}, 422),  # no timezone
        ({"since": "0001-01-01T00:00:00+14:00"}, 422),  # before year 1 in UTC
        ({"until": "9999-12-31T23:59:59-14:00"}, 422),  # after year 9999 in UTC
        ({"limit": 0}, 422),
        ({"limit": 201}, 422),
        ({"limit": "ten"}, 422),
        ({"cursor": "not-a-cursor"}, 400),
        ({"cursor": "W1siYSJdXQ"}, 400),  # base64 of [["a"]]: wrong shape
        ({"cursor": "WyJ4Il0"}, 400),  # ["x"]: wrong type for the id
        ({"cursor": "x" * 600}, 422),
    ],
)
async def test_malformed_list_parameters_are_refused(
    pipeline: PipelineHarness, params: dict[str, Any], status: int
) -> None:
    response = await pipeline.client.get(
        BASE, params=params, headers=pipeline.headers(Role.OPERATOR)
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"result": "pending"}, 422),
        ({"result": "bogus"}, 422),
        ({"results": "failed"}, 422),  # a typo is refused, not ignored
        ({"event": "Bad Event"}, 422),
        ({"since": "2026-12-01T00:00:00"}, 422),
        ({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, 422),
        ({"since": "2026-12-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, 422),
        ([], 422),
        ("failed", 422),
        (b"{not json", 400),
        (b'{"event": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),  # nested too deeply
    ],
)
async def test_malformed_bulk_bodies_are_refused(
    pipeline: PipelineHarness, body: Any, status: int
) -> None:
    await seed(pipeline, _delivery("stays-failed"))
    headers = {**pipeline.headers(Role.ADMIN), "Content-Type": "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await pipeline.client.post(f"{BASE}/reprocess", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert_untouched(await stored(pipeline, "stays-failed"), "failed")


# -- OpenAPI ------------------------------------------------------------------------------


async def test_routes_are_documented_with_readable_operation_ids(pipeline: PipelineHarness) -> None:
    spec = (await pipeline.client.get("/pipelines/openapi.json")).json()
    operations = {
        (method, path): operation
        for path, item in spec["paths"].items()
        if path.startswith(BASE)
        for method, operation in item.items()
    }
    assert {key: op["operationId"] for key, op in operations.items()} == {
        ("get", BASE): "list_deliveries",
        ("post", f"{BASE}/reprocess"): "reprocess_deliveries",
        ("get", f"{BASE}/{{delivery_id}}"): "read_delivery",
        ("post", f"{BASE}/{{delivery_id}}/reprocess"): "reprocess_delivery",
    }
    for operation in operations.values():
        assert operation["tags"] == ["webhooks"]
        assert operation["summary"]
        assert {"401", "403"} <= set(operation["responses"])

    def problem_codes(method: str, path: str, status: str) -> set[str]:
        content = operations[(method, path)]["responses"][status]["content"]
        return set(content["application/problem+json"]["examples"])

    assert "202" in operations[("post", f"{BASE}/{{delivery_id}}/reprocess")]["responses"]
    assert "delivery_not_found" in problem_codes("get", f"{BASE}/{{delivery_id}}", "404")
    assert "delivery_pending" in problem_codes("post", f"{BASE}/{{delivery_id}}/reprocess", "409")
    assert "too_many_deliveries" in problem_codes("post", f"{BASE}/reprocess", "422")
    assert "invalid_cursor" in problem_codes("get", BASE, "400")
    item = spec["components"]["schemas"]["DeliveryRead"]
    assert set(item["properties"]) == READ_FIELDS
