"""User administration through auth's internal API: list, read, change role and active flag;
auth keeps at least one active admin, even against concurrent changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flightdeck_common.testing.service_checks import bearer

Onboarding = Any
PASSWORD = "a-long-and-unusual-passphrase"


async def test_list_and_read_users(onboarding: Onboarding) -> None:
    for name, role in (("ann", "viewer"), ("ben", "operator"), ("annika", "viewer")):
        await onboarding.create_auth_user(name, PASSWORD, role=role)
    headers = await onboarding.headers()

    listed = await onboarding.admin.get("/admin/users", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [u["username"] for u in listed.json()["items"]] == ["admin", "ann", "ben", "annika"]
    assert "password_hash" not in listed.text

    pages: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = await onboarding.admin.get("/admin/users", params=params, headers=headers)
        pages += [u["username"] for u in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == ["admin", "ann", "ben", "annika"]

    filtered = await onboarding.admin.get(
        "/admin/users", params={"role": "viewer", "q": "ann"}, headers=headers
    )
    assert [u["username"] for u in filtered.json()["items"]] == ["ann", "annika"]
    inactive = await onboarding.admin.get(
        "/admin/users", params={"is_active": "false"}, headers=headers
    )
    assert inactive.json()["items"] == []

    ben_id = (await onboarding.auth_users())["ben"]["id"]
    one = await onboarding.admin.get(f"/admin/users/{ben_id}", headers=headers)
    assert one.status_code == 200
    assert one.json()["role"] == "operator"
    missing = await onboarding.admin.get("/admin/users/4242", headers=headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "user_not_found"

    bad_cursor = await onboarding.admin.get(
        "/admin/users", params={"cursor": "not-a-cursor"}, headers=headers
    )
    assert bad_cursor.status_code == 400  # auth's answer, passed on
    assert bad_cursor.json()["code"] == "invalid_cursor"
    for params in ({"role": "root"}, {"limit": 0}, {"q": "x" * 81}):
        assert (
            await onboarding.admin.get("/admin/users", params=params, headers=headers)
        ).status_code == 422


async def test_users_need_an_admin(onboarding: Onboarding) -> None:
    await onboarding.create_auth_user("carl", PASSWORD, role="operator")
    operator = await onboarding.headers("carl", PASSWORD)
    assert (await onboarding.admin.get("/admin/users")).status_code == 401
    assert (await onboarding.admin.get("/admin/users", headers=bearer("x.y.z"))).status_code == 401
    assert (await onboarding.admin.get("/admin/users", headers=operator)).status_code == 403
    patched = await onboarding.admin.patch(
        "/admin/users/1", json={"role": "viewer"}, headers=operator
    )
    assert patched.status_code == 403
    assert (await onboarding.auth_users())["admin"]["role"] == "admin"


async def test_change_role_and_deactivate(onboarding: Onboarding) -> None:
    dave = await onboarding.create_auth_user("dave", PASSWORD)
    dave_token = await onboarding.login("dave", PASSWORD)
    headers = await onboarding.headers()

    promoted = await onboarding.admin.patch(
        f"/admin/users/{dave['id']}", json={"role": "operator"}, headers=headers
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "operator"
    assert (await onboarding.auth_users())["dave"]["role"] == "operator"

    deactivated = await onboarding.admin.patch(
        f"/admin/users/{dave['id']}", json={"is_active": False}, headers=headers
    )
    assert deactivated.status_code == 200
    assert deactivated.json()["is_active"] is False
    # Auth ended dave's sessions and refuses his password now.
    assert (await onboarding.auth.get("/auth/me", headers=bearer(dave_token))).status_code == 401
    login = await onboarding.auth.post(
        "/auth/login", json={"username": "dave", "password": PASSWORD}
    )
    assert login.status_code in (401, 403)

    events = await onboarding.outbox("admin.user.updated")
    assert [e["data"]["changes"] for e in events] == [
        {"role": {"from": "viewer", "to": "operator"}},
        {"is_active": {"from": True, "to": False}},
    ]
    assert {e["actor"] for e in events} == {"admin"}
    assert {e["subject"] for e in events} == {str(dave["id"])}

    reactivated = await onboarding.admin.patch(
        f"/admin/users/{dave['id']}", json={"is_active": True, "role": "viewer"}, headers=headers
    )
    assert reactivated.status_code == 200
    await onboarding.login("dave", PASSWORD)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # refused before auth
@pytest.mark.parametrize(
    "body", [{}, {"role": "root"}, {"is_active": "maybe"}, {"role": None, "is_active": None}]
)
async def test_bad_patches_are_422(onboarding: Onboarding, body: dict[str, Any]) -> None:
    response = await onboarding.admin.patch(
        "/admin/users/1", json=body, headers=await onboarding.headers()
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_patching_an_unknown_user_is_404(onboarding: Onboarding) -> None:
    response = await onboarding.admin.patch(
        "/admin/users/4242", json={"role": "viewer"}, headers=await onboarding.headers()
    )
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert await onboarding.outbox("admin.user.updated") == []


@pytest.mark.parametrize("change", [{"role": "operator"}, {"is_active": False}])
async def test_the_last_admin_stays(onboarding: Onboarding, change: dict[str, Any]) -> None:
    headers = await onboarding.headers()
    admin_id = (await onboarding.auth_users())["admin"]["id"]
    response = await onboarding.admin.patch(
        f"/admin/users/{admin_id}", json=change, headers=headers
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "last_admin"
    assert response.headers["content-type"] == "application/problem+json"
    admin = (await onboarding.auth_users())["admin"]
    assert (admin["role"], admin["is_active"]) == ("admin", True)
    assert await onboarding.outbox("admin.user.updated") == []


async def test_concurrent_demotions_keep_one_admin(onboarding: Onboarding) -> None:
    """Two admins, one demoted and the other deactivated at the same time: without the
    lock in auth both would see two admins and leave none."""
    second = await onboarding.create_auth_user("second-admin", PASSWORD, role="admin")
    first_id = (await onboarding.auth_users())["admin"]["id"]
    headers = await onboarding.headers()
    answers = await asyncio.gather(
        onboarding.admin.patch(
            f"/admin/users/{first_id}", json={"role": "viewer"}, headers=headers
        ),
        onboarding.admin.patch(
            f"/admin/users/{second['id']}", json={"is_active": False}, headers=headers
        ),
    )
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    assert [a.json()["code"] for a in answers if a.status_code == 409] == ["last_admin"]
    users = await onboarding.auth_users()
    active_admins = [u for u in users.values() if u["role"] == "admin" and u["is_active"]]
    assert len(active_admins) == 1
    assert len(await onboarding.outbox("admin.user.updated")) == 1


async def test_granting_admin_is_asked_on_the_admin_s_own_behalf(onboarding: Onboarding) -> None:
    """Auth grants admin through its internal API only with the asking admin's own token
    (admin's service token alone is refused): admin forwards it."""
    erin = await onboarding.create_auth_user("erin", PASSWORD)
    granted = await onboarding.admin.patch(
        f"/admin/users/{erin['id']}", json={"role": "admin"}, headers=await onboarding.headers()
    )
    assert granted.status_code == 200, granted.text
    assert (await onboarding.auth_users())["erin"]["role"] == "admin"
    alone = await onboarding.auth.patch(
        f"/auth/internal/users/{erin['id']}",
        json={"role": "viewer"},
        headers=await onboarding.service_headers(),
    )
    assert alone.status_code == 200  # taking admin away needs no acting admin
    again = await onboarding.auth.patch(
        f"/auth/internal/users/{erin['id']}",
        json={"role": "admin"},
        headers=await onboarding.service_headers(),
    )
    assert again.status_code == 403
    assert again.json()["code"] == "acting_admin_required"
