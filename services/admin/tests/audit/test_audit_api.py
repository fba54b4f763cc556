"""The audit routes on SQLite and PostgreSQL: ingest (service tokens, idempotent, limits,
bad input), list with filters and pagination, verify, policy decisions."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from flightdeck_common.auth.claims import AUTH_REVOCATIONS_AUDIENCE, Role

AdminApi = Any
PROBLEM_JSON = "application/problem+json"


async def list_all(api: AdminApi, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list, following ``next_cursor``."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get(path, params=query, headers=api.admin_headers())
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_ingested_events_are_listed_newest_first_with_every_field(
    admin_api: AdminApi, new_event: Any
) -> None:
    events = [new_event() for _ in range(3)]
    response = await admin_api.ingest(events, admin_api.service_headers("pipeline"))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0}

    listed = await admin_api.client.get("/admin/audit-events", headers=admin_api.admin_headers())
    assert listed.status_code == 200
    page = listed.json()
    assert page["next_cursor"] is None
    assert [item["seq"] for item in page["items"]] == [3, 2, 1]
    newest = page["items"][0]
    sent = events[2]
    assert set(newest) == {
        "seq",
        "id",
        "type",
        "service",
        "source",
        "actor",
        "subject",
        "occurred_at",
        "recorded_at",
        "ip",
        "request_id",
        "data",
        "prev_hash",
        "hash",
    }
    for name in ("id", "type", "service", "actor", "subject", "ip", "request_id", "data"):
        assert newest[name] == sent[name], name
    assert newest["source"] == "pipeline"  # the token's client id
    assert newest["occurred_at"].replace("Z", "+00:00") == sent["occurred_at"]
    assert newest["prev_hash"] == page["items"][1]["hash"]
    assert page["items"][2]["prev_hash"] == "0" * 64


async def test_each_filter_and_keyset_pagination(admin_api: AdminApi, new_event: Any) -> None:
    events = [
        new_event(type="auth.login.succeeded", service="auth", actor="alice"),
        new_event(type="pipeline.run.created", service="pipeline", actor="bob"),
        new_event(type="auth.login.succeeded", service="auth", actor="bob"),
        new_event(type="auth.login.failed", service="auth", actor="alice"),
        new_event(type="pipeline.run.created", service="pipeline", actor="alice"),
    ]
    assert (await admin_api.ingest(events)).status_code == 200
    path = "/admin/audit-events"

    def seqs(items: list[dict[str, Any]]) -> list[int]:
        return [item["seq"] for item in items]

    assert seqs(await list_all(admin_api, path, type="auth.login.succeeded")) == [3, 1]
    assert seqs(await list_all(admin_api, path, actor="alice")) == [5, 4, 1]
    assert seqs(await list_all(admin_api, path, service="pipeline")) == [5, 2]
    assert seqs(await list_all(admin_api, path, since=events[3]["occurred_at"])) == [5, 4]
    assert seqs(await list_all(admin_api, path, service="auth", actor="bob")) == [3]
    assert seqs(await list_all(admin_api, path, type="nope")) == []

    # One page at a time: limit 2 gives 2 + 2 + 1, newest first, no repeats.
    assert seqs(await list_all(admin_api, path, limit=2)) == [5, 4, 3, 2, 1]
    first = await admin_api.client.get(
        path, params={"limit": 2, "actor": "alice"}, headers=admin_api.admin_headers()
    )
    assert seqs(first.json()["items"]) == [5, 4]
    second = await admin_api.client.get(
        path,
        params={"limit": 2, "actor": "alice", "cursor": first.json()["next_cursor"]},
        headers=admin_api.admin_headers(),
    )
    assert (seqs(second.json()["items"]), second.json()["next_cursor"]) == ([1], None)


async def test_a_redelivered_batch_is_counted_as_duplicates_and_changes_nothing(
    admin_api: AdminApi, new_event: Any
) -> None:
    batch = [new_event() for _ in range(4)]
    assert (await admin_api.ingest(batch)).json() == {"accepted": 4, "duplicates": 0}
    before = await list_all(admin_api, "/admin/audit-events")

    again = await admin_api.ingest(batch)
    assert (again.status_code, again.json()) == (200, {"accepted": 0, "duplicates": 4})
    assert await list_all(admin_api, "/admin/audit-events") == before

    # A batch repeating an id within itself stores it once.
    one = new_event()
    assert (await admin_api.ingest([one, one])).json() == {"accepted": 1, "duplicates": 1}


async def test_verify_reports_valid_then_the_first_tampered_row(
    admin_api: AdminApi, new_event: Any
) -> None:
    path = "/admin/audit-events/verify"
    empty = await admin_api.client.get(path, headers=admin_api.admin_headers())
    assert empty.json() == {
        "valid": True,
        "checked": 0,
        "first_invalid_id": None,
        "first_invalid_seq": None,
        "first_invalid_source": None,
        "reason": None,
        "published_head_matched": None,
    }
    events = [new_event() for _ in range(4)]
    await admin_api.ingest(events)
    valid = (await admin_api.client.get(path, headers=admin_api.admin_headers())).json()
    assert (valid["valid"], valid["checked"]) == (True, 4)

    await admin_api.sql("UPDATE audit_events SET actor='mallory' WHERE seq=2")
    tampered = (await admin_api.client.get(path, headers=admin_api.admin_headers())).json()
    assert tampered["valid"] is False
    assert (tampered["first_invalid_seq"], tampered["first_invalid_id"]) == (2, events[1]["id"])
    assert tampered["first_invalid_source"] == "pipeline"
    assert tampered["checked"] == 1


async def test_verify_reports_edited_data(admin_api: AdminApi, new_event: Any) -> None:
    events = [new_event() for _ in range(3)]
    await admin_api.ingest(events)
    await admin_api.sql("UPDATE audit_events SET data=:data WHERE seq=3", data='{"n":999}')
    result = (
        await admin_api.client.get("/admin/audit-events/verify", headers=admin_api.admin_headers())
    ).json()
    assert (result["valid"], result["first_invalid_seq"], result["first_invalid_id"]) == (
        False,
        3,
        events[2]["id"],
    )


async def test_verify_reports_a_deleted_last_row(admin_api: AdminApi, new_event: Any) -> None:
    await admin_api.ingest([new_event() for _ in range(3)])
    await admin_api.sql("DELETE FROM audit_events WHERE seq=3")
    result = (
        await admin_api.client.get("/admin/audit-events/verify", headers=admin_api.admin_headers())
    ).json()
    assert (result["valid"], result["checked"], result["first_invalid_seq"]) == (False, 2, 3)
    assert result["first_invalid_id"] is None
    assert "missing" in result["reason"]


@pytest.mark.parametrize(
    "who",
    ["nobody", "admin user", "viewer user", "wrong audience", "garbage"],
)
async def test_ingest_needs_a_service_token_for_the_admin_audience(
    admin_api: AdminApi, new_event: Any, who: str
) -> None:
    headers = {
        "nobody": {},
        "admin user": admin_api.admin_headers(Role.ADMIN),
        "viewer user": admin_api.admin_headers(Role.VIEWER),
        "wrong audience": admin_api.service_headers("pipeline", [AUTH_REVOCATIONS_AUDIENCE]),
        "garbage": {"Authorization": "Bearer not-a-token"},
    }[who]
    response = await admin_api.ingest([new_event()], headers)
    assert response.status_code in (401, 403), response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    listed = await list_all(admin_api, "/admin/audit-events")
    assert listed == []


@pytest.mark.parametrize(
    "path",
    [
        "/admin/audit-events",
        "/admin/audit-events/verify",
        "/admin/policy-decisions",
        "/admin/audit-events/stream",
    ],
)
async def test_reads_are_for_admins_only(admin_api: AdminApi, path: str) -> None:
    nobody = await admin_api.client.get(path)
    assert nobody.status_code == 401
    operator = await admin_api.client.get(path, headers=admin_api.admin_headers(Role.OPERATOR))
    assert operator.status_code == 403
    assert operator.headers["content-type"] == PROBLEM_JSON
    service = await admin_api.client.get(path, headers=admin_api.service_headers())
    assert service.status_code == 401


@pytest.mark.parametrize("count", [0, 501])
async def test_batches_hold_1_to_500_events(
    admin_api: AdminApi, new_event: Any, count: int
) -> None:
    response = await admin_api.ingest([new_event() for _ in range(count)])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON


async def test_a_full_batch_of_500_is_accepted(admin_api: AdminApi, new_event: Any) -> None:
    response = await admin_api.ingest([new_event() for _ in range(500)])
    assert response.json() == {"accepted": 500, "duplicates": 0}


BAD_EVENTS: dict[str, dict[str, Any]] = {
    "naive time": {"occurred_at": "2026-11-25T12:00:00"},
    "time beyond UTC": {"occurred_at": "0001-01-01T00:00:00+01:00"},
    "no id": {"id": None},
    "empty id": {"id": ""},
    "long id": {"id": "x" * 37},
    "long type": {"type": "t" * 101},
    "empty type": {"type": ""},
    "NUL in actor": {"actor": "al\x00ice"},
    "NUL in type": {"type": "a\x00b"},
    "surrogate in data": {"data": {"k": "\ud800"}},
    "surrogate in subject": {"subject": "\udfff"},
    "data not an object": {"data": [1, 2]},
}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
async def test_bad_events_are_422_and_nothing_is_stored(
    admin_api: AdminApi, new_event: Any, case: str
) -> None:
    event = new_event(**BAD_EVENTS[case])
    if event["id"] is None:
        del event["id"]
    response = await admin_api.ingest([new_event(), event])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert await list_all(admin_api, "/admin/audit-events") == []


async def test_malformed_and_deeply_nested_bodies_are_4xx(admin_api: AdminApi) -> None:
    headers = {**admin_api.service_headers(), "Content-Type": "application/json"}
    for body in (b"{not json", b'{"events": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        response = await admin_api.client.post(
            "/admin/internal/audit-events", content=body, headers=headers
        )
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == PROBLEM_JSON


# Near Python's recursion limit the JSON parser itself may give up first (400): which of
# the two answers comes depends on how deep the stack already is, both are refusals.
@pytest.mark.parametrize(
    ("depth", "statuses"), [(64, {200}), (65, {422}), (900, {400, 422}), (50_000, {400})]
)
async def test_data_nesting_is_bounded_so_every_stored_event_can_be_served(
    admin_api: AdminApi, new_event: Any, depth: int, statuses: set[int]
) -> None:
    event = json.dumps(new_event(data={}))
    nested = '{"d":' * (depth - 1) + "{}" + "}" * (depth - 1)
    body = '{"events": [' + event.replace('"data": {}', f'"data": {nested}') + "]}"
    headers = {**admin_api.service_headers(), "Content-Type": "application/json"}
    response = await admin_api.client.post(
        "/admin/internal/audit-events", content=body.encode(), headers=headers
    )
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == (
        "application/json" if response.status_code == 200 else PROBLEM_JSON
    )
    for path in ("/admin/audit-events", "/admin/audit-events/verify"):
        served = await admin_api.client.get(path, headers=admin_api.admin_headers())
        assert served.status_code == 200, served.text


@pytest.mark.parametrize(
    "query",
    [
        "cursor=not-a-cursor",
        "limit=0",
        "limit=201",
        "since=2026-01-01T00:00:00",
        f"since={quote('0001-01-01T00:00:00+01:00')}",
        "actor=%00",
        "type=" + "t" * 101,
    ],
)
async def test_bad_list_parameters_are_4xx_problems(admin_api: AdminApi, query: str) -> None:
    for path in ("/admin/audit-events", "/admin/policy-decisions"):
        if query.startswith(("actor", "type")) and "policy" in path:
            continue
        response = await admin_api.client.get(f"{path}?{query}", headers=admin_api.admin_headers())
        assert response.status_code in (400, 422), (path, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON


async def test_policy_decisions_list_only_decision_types(
    admin_api: AdminApi, new_event: Any
) -> None:
    events = [
        new_event(type="auth.login.policy_decision", service="auth", data={"decision": "deny"}),
        new_event(type="auth.login.succeeded", service="auth"),
        new_event(type="admin.registration.approved", service="admin", subject="request:1"),
        new_event(type="pipeline.run.created"),
        new_event(type="admin.registration.rejected", service="admin", subject="request:2"),
        new_event(type="admin.registration.requested", service="admin"),
    ]
    await admin_api.ingest(events)
    decisions = await list_all(admin_api, "/admin/policy-decisions", limit=1)
    assert [d["seq"] for d in decisions] == [5, 3, 1]
    assert [d["type"] for d in decisions] == [
        "admin.registration.rejected",
        "admin.registration.approved",
        "auth.login.policy_decision",
    ]
    assert set(decisions[2]) == {"seq", "id", "type", "actor", "subject", "occurred_at", "data"}
    assert decisions[2]["data"] == {"decision": "deny"}
    assert decisions[2]["id"] == events[0]["id"]

    recent = await list_all(admin_api, "/admin/policy-decisions", since=events[2]["occurred_at"])
    assert [d["seq"] for d in recent] == [5, 3]


async def test_documented_operations(admin_api: AdminApi) -> None:
    schema = (await admin_api.client.get("/admin/openapi.json")).json()
    operations = {
        (method, path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    expected = {
        ("post", "/admin/internal/audit-events"): ("append_audit_events", "internal"),
        ("get", "/admin/audit-events"): ("list_audit_events", "audit"),
        ("get", "/admin/audit-events/verify"): ("verify_audit_chain", "audit"),
        ("get", "/admin/audit-events/stream"): ("stream_audit_events", "audit"),
        ("get", "/admin/policy-decisions"): ("list_policy_decisions", "policy"),
    }
    for key, (operation_id, tag) in expected.items():
        operation = operations[key]
        assert operation["operationId"] == operation_id
        assert operation["tags"] == [tag]
        assert operation["summary"]
        assert "401" in operation["responses"]
    stream = operations[("get", "/admin/audit-events/stream")]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert "422" in operations[("post", "/admin/internal/audit-events")]["responses"]
