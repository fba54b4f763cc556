"""Service tokens, the internal API, deactivation and the revocation feed."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any
NEW_PASSWORD = "a-long-and-unusual-passphrase"


async def test_service_token_flow(auth: AuthHarness) -> None:
    token = await auth.service_token()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "svc:admin-service"
    assert claims["token_use"] == "service"
    assert claims["aud"] == ["flightdeck:auth-revocations", "flightdeck:auth-users"]
    listed = await auth.client.get("/auth/internal/users", headers=bearer(token))
    assert listed.status_code == 200
    assert [u["username"] for u in listed.json()["items"]] == ["admin"]


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"client_secret": "wrong-secret"}, 401, "invalid_client"),
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "flightdeck:admin-internal"}, 400, "invalid_scope"),
    ],
)
async def test_service_token_refusals(
    auth: AuthHarness, form: dict[str, str], status: int, code: str
) -> None:
    data = {
        "grant_type": "client_credentials",
        "client_id": "admin-service",
        "client_secret": "service-secret-for-tests-0123456789",
        **form,
    }
    response = await auth.client.post("/auth/service-token", data=data)
    assert response.status_code == status
    assert response.json()["code"] == code


async def test_internal_api_refuses_user_tokens(auth: AuthHarness) -> None:
    user_token = (await auth.tokens())["access_token"]
    assert (
        await auth.client.get("/auth/internal/users", headers=bearer(user_token))
    ).status_code in (
        401,
        403,
    )
    assert (await auth.client.get("/auth/internal/users")).status_code == 401


async def _create_operator(auth: AuthHarness, service_token: str, **extra: Any) -> Any:
    password_hash = await PasswordHasher().hash(NEW_PASSWORD)
    return await auth.client.post(
        "/auth/internal/users",
        json={"username": "Olga", "password_hash": password_hash, "role": "operator", **extra},
        headers=bearer(service_token),
    )


async def test_create_user_from_hash_is_idempotent_by_key(auth: AuthHarness) -> None:
    token = await auth.service_token()
    first = await _create_operator(auth, token, idempotency_key="registration:7")
    assert first.status_code == 201
    assert first.json()["username"] == "olga"
    again = await _create_operator(auth, token, idempotency_key="registration:7")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    clash = await _create_operator(auth, token)
    assert clash.status_code == 409
    login = await auth.login("olga", NEW_PASSWORD)
    assert login.status_code == 200
    assert login.json()["user"]["role"] == "operator"


async def test_plaintext_password_is_not_accepted_as_hash(auth: AuthHarness) -> None:
    token = await auth.service_token()
    response = await auth.client.post(
        "/auth/internal/users",
        json={"username": "mallory", "password_hash": "plaintext-password"},
        headers=bearer(token),
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_password_hash"


async def test_deactivation_ends_sessions_everywhere_at_once(auth: AuthHarness) -> None:
    service = await auth.service_token()
    user_id = (await _create_operator(auth, service)).json()["id"]
    pair = await auth.tokens("olga", NEW_PASSWORD)
    assert (
        await auth.client.get("/auth/me", headers=bearer(pair["access_token"]))
    ).status_code == 200

    off = await auth.client.patch(
        f"/auth/internal/users/{user_id}", json={"is_active": False}, headers=bearer(service)
    )
    assert off.status_code == 200
    assert off.json()["is_active"] is False
    me = await auth.client.get("/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 401
    refreshed = await auth.client.post(
        "/auth/token/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 401
    assert (await auth.login("olga", NEW_PASSWORD)).status_code == 401
    # The revocation is published on the feed for services without Redis.
    feed = await auth.client.get("/auth/internal/revocations", headers=bearer(service))
    assert any(item["subject"] == str(user_id) for item in feed.json()["items"])
    assert "auth.user.deactivated" in await auth.outbox_types()


async def test_last_admin_cannot_be_demoted(auth: AuthHarness) -> None:
    service = await auth.service_token()
    admin_id = (await auth.tokens())["user"]["id"]
    response = await auth.client.patch(
        f"/auth/internal/users/{admin_id}", json={"role": "viewer"}, headers=bearer(service)
    )
    assert response.status_code == 409
    assert response.json()["code"] == "last_admin"


async def test_role_change_takes_effect_immediately(auth: AuthHarness) -> None:
    service = await auth.service_token()
    user_id = (await _create_operator(auth, service)).json()["id"]
    old = await auth.tokens("olga", NEW_PASSWORD)
    await auth.client.patch(
        f"/auth/internal/users/{user_id}", json={"role": "viewer"}, headers=bearer(service)
    )
    assert (
        await auth.client.get("/auth/me", headers=bearer(old["access_token"]))
    ).status_code == 401
    fresh = await auth.tokens("olga", NEW_PASSWORD)
    assert fresh["user"]["role"] == "viewer"


async def test_unknown_user_is_404(auth: AuthHarness) -> None:
    service = await auth.service_token()
    response = await auth.client.patch(
        "/auth/internal/users/99999", json={"is_active": False}, headers=bearer(service)
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/auth/internal/users/9223372036854775808", 422),
        ("/auth/internal/users/-1", 422),
        ("/auth/internal/users/9223372036854775808/approval-key", 422),
        ("/auth/internal/revocations?after=9223372036854775808", 422),
        # base64url of [99999999999999999999]: a cursor no page ever returned
        ("/auth/internal/users?cursor=Wzk5OTk5OTk5OTk5OTk5OTk5OTk5XQ", 400),
    ],
)
async def test_out_of_range_numbers_are_4xx_not_database_errors(
    auth: AuthHarness, path: str, status: int
) -> None:
    service = await auth.service_token()
    response = await auth.client.get(path, headers=bearer(service))
    assert response.status_code == status, response.text
