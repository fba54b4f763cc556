"""Filing registration requests (public, rate limited) and reading them (admins)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.testing.service_checks import bearer

Onboarding = Any
PASSWORD = "a-long-and-unusual-passphrase"


async def test_filing_stores_only_an_argon2id_hash(onboarding: Onboarding) -> None:
    response = await onboarding.file("  Alice ", PASSWORD, reason="joins the SRE team")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["username"] == "alice"  # normalized like auth does
    assert body["status"] == "pending"
    assert body["reason"] == "joins the SRE team"
    assert set(body) == {"id", "username", "reason", "status", "created_at"}
    assert "argon2" not in response.text
    assert PASSWORD not in response.text

    row = await onboarding.request_row(body["id"])
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert await PasswordHasher().verify(row["password_hash"], PASSWORD)
    assert row["status"] == "pending"

    [event] = await onboarding.outbox("admin.registration.requested")
    assert event["subject"] == str(body["id"])
    assert event["data"]["username"] == "alice"
    assert PASSWORD not in str(event)
    assert "argon2" not in str(event)

    # Admins see it, still without the hash; the requester has no account yet.
    listed = await onboarding.admin.get(
        "/admin/registration-requests", headers=await onboarding.headers()
    )
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert item["id"] == body["id"]
    assert item["status"] == "pending"
    assert "password_hash" not in item
    assert "argon2" not in listed.text
    assert "alice" not in await onboarding.auth_users()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # refused before storage
@pytest.mark.parametrize(
    ("username", "password", "code"),
    [
        ("bob", "short-pw", "weak_password"),
        ("bob", "password1234", "weak_password"),  # a well-known password
        ("bobby", "my-name-is-bobby-ok", "weak_password"),  # contains the username
        ("bob", "x" * 300, "weak_password"),
        ("b", PASSWORD, "invalid_username"),
        ("bad name!", PASSWORD, "invalid_username"),
        ("x" * 81, PASSWORD, "invalid_username"),
    ],
)
async def test_policy_violations_are_422(
    onboarding: Onboarding, username: str, password: str, code: str
) -> None:
    response = await onboarding.file(username, password)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert password not in response.text
    assert await onboarding.outbox() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "carol"},
        {"username": "carol", "password": 12},
        {"username": "carol", "password": PASSWORD, "reason": "r" * 1001},
        {"username": "carol", "password": PASSWORD, "reason": "nul \x00 inside"},
        {"username": "carol", "password": "lone \ud800 surrogate passphrase"},
        {"username": "carol", "password": PASSWORD, "reason": "lone \udfff"},
        {"username": ["carol"], "password": PASSWORD},
    ],
)
async def test_malformed_requests_are_4xx(onboarding: Onboarding, body: dict[str, Any]) -> None:
    # json.dumps escapes lone surrogates (\\ud800) as a client could; httpx's json= cannot.
    response = await onboarding.admin.post(
        "/admin/registration-requests",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_taken_and_requested_names_get_one_identical_answer(
    onboarding: Onboarding,
) -> None:
    await onboarding.filed("dora")
    duplicate = await onboarding.file("DORA", "another-long-passphrase")
    existing = await onboarding.file("admin", "another-long-passphrase")  # exists at auth
    assert duplicate.status_code == existing.status_code == 409

    def comparable(response: Any) -> dict[str, Any]:
        body: dict[str, Any] = response.json()
        body.pop("request_id", None)
        return body

    assert comparable(duplicate) == comparable(existing)
    assert comparable(duplicate)["code"] == "username_unavailable"
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert len(await onboarding.outbox("admin.registration.requested")) == 1


async def test_a_rejected_name_may_be_requested_again(onboarding: Onboarding, rsa_key: Any) -> None:
    await onboarding.register_key(rsa_key)
    request_id = await onboarding.filed("erin")
    assert (await onboarding.decide(request_id, "reject", rsa_key)).status_code == 200
    assert (await onboarding.file("erin")).status_code == 202


async def test_filing_is_rate_limited_per_ip(onboarding_factory: Any) -> None:
    onboarding = await onboarding_factory(rate_limit_registration="3/hour")
    answers = [(await onboarding.file(name)).status_code for name in ("fay", "fay", "b", "gus")]
    assert answers == [202, 409, 422, 429]  # every attempt counts, good or bad
    limited = await onboarding.file("hal")
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert int(limited.headers["retry-after"]) > 0
    assert "gus" not in [e["data"]["username"] for e in await onboarding.outbox()]


async def test_filing_needs_auth_to_check_the_name(onboarding: Onboarding) -> None:
    onboarding.transport.unreachable = lambda request: True
    response = await onboarding.file("ivy")
    assert response.status_code == 503
    assert response.json()["code"] == "auth_unavailable"
    assert response.headers["retry-after"]
    onboarding.transport.unreachable = None
    assert (await onboarding.file("ivy")).status_code == 202


async def test_listing_filters_and_pages(onboarding: Onboarding, rsa_key: Any) -> None:
    await onboarding.register_key(rsa_key)
    ids = [await onboarding.filed(name) for name in ("jan", "kim", "lou")]
    assert (await onboarding.decide(ids[1], "reject", rsa_key)).status_code == 200
    headers = await onboarding.headers()

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = await onboarding.admin.get(
            "/admin/registration-requests", params=params, headers=headers
        )
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)  # newest first

    pending = await onboarding.admin.get(
        "/admin/registration-requests", params={"status": "pending"}, headers=headers
    )
    assert [i["id"] for i in pending.json()["items"]] == [ids[2], ids[0]]
    rejected = await onboarding.admin.get(
        "/admin/registration-requests", params={"status": "rejected"}, headers=headers
    )
    [item] = rejected.json()["items"]
    assert item["id"] == ids[1]
    assert item["decided_by"] == "admin"

    one = await onboarding.admin.get(f"/admin/registration-requests/{ids[0]}", headers=headers)
    assert one.status_code == 200
    assert one.json()["username"] == "jan"

    for params in ({"status": "nope"}, {"limit": 0}, {"limit": 201}):
        bad = await onboarding.admin.get(
            "/admin/registration-requests", params=params, headers=headers
        )
        assert bad.status_code == 422
    bad_cursor = await onboarding.admin.get(
        "/admin/registration-requests", params={"cursor": "garbage!"}, headers=headers
    )
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["code"] == "invalid_cursor"
    missing = await onboarding.admin.get("/admin/registration-requests/9999", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "registration_request_not_found"


async def test_reading_requests_needs_an_admin(onboarding: Onboarding) -> None:
    request_id = await onboarding.filed("max")
    await onboarding.create_auth_user("olga", PASSWORD, role="operator")
    operator = await onboarding.headers("olga", PASSWORD)
    for path in ("/admin/registration-requests", f"/admin/registration-requests/{request_id}"):
        assert (await onboarding.admin.get(path)).status_code == 401
        assert (await onboarding.admin.get(path, headers=bearer("a.b.c"))).status_code == 401
        forbidden = await onboarding.admin.get(path, headers=operator)
        assert forbidden.status_code == 403
        assert forbidden.json()["code"] == "insufficient_role"
