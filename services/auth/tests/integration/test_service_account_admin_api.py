"""Admins create, list and deactivate service accounts over HTTP; the secret is shown once
and works at the token endpoint until the account is deactivated."""

from __future__ import annotations

import asyncio
from typing import Any

from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any
OPERATOR_PASSWORD = "operator-passphrase-for-tests"


async def _admin_headers(auth: AuthHarness) -> dict[str, str]:
    return bearer((await auth.tokens())["access_token"])


async def _token(auth: AuthHarness, client_id: str, secret: str, **extra: str) -> Any:
    return await auth.client.post(
        "/auth/service-token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            **extra,
        },
    )


async def test_created_account_gets_tokens_until_deactivated(auth: AuthHarness) -> None:
    headers = await _admin_headers(auth)
    created = await auth.client.post(
        "/auth/service-accounts",
        json={
            "client_id": "release-bot",
            "audiences": ["flightdeck:admin-internal"],
            "description": "release tooling",
        },
        headers=headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["client_id"] == "release-bot"
    assert body["audiences"] == ["flightdeck:admin-internal"]
    assert body["is_active"] is True
    secret = body["client_secret"]
    assert len(secret) >= 40

    issued = await _token(auth, "release-bot", secret)
    assert issued.status_code == 200, issued.text
    assert issued.json()["scope"] == "flightdeck:admin-internal"
    # Only the audiences it was given.
    refused = await _token(auth, "release-bot", secret, scope="flightdeck:auth-internal")
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_scope"

    listed = await auth.client.get("/auth/service-accounts", headers=headers)
    assert listed.status_code == 200
    accounts = {a["client_id"]: a for a in listed.json()["items"]}
    assert accounts["release-bot"]["description"] == "release tooling"
    assert "client_secret" not in accounts["release-bot"]
    assert secret not in listed.text

    gone = await auth.client.delete("/auth/service-accounts/release-bot", headers=headers)
    assert gone.status_code == 200
    assert gone.json()["is_active"] is False
    again = await auth.client.delete("/auth/service-accounts/release-bot", headers=headers)
    assert again.status_code == 200  # idempotent
    after = await _token(auth, "release-bot", secret)
    assert after.status_code == 401
    assert after.json()["code"] == "invalid_client"

    types = await auth.outbox_types()
    assert types.count("auth.service_account.created") == 1
    assert types.count("auth.service_account.deactivated") == 1


async def test_taken_client_id_is_409_also_when_concurrent(auth: AuthHarness) -> None:
    headers = await _admin_headers(auth)
    payload = {"client_id": "ci-sync", "audiences": ["flightdeck:auth-internal"]}
    answers = await asyncio.gather(
        *(
            auth.client.post("/auth/service-accounts", json=payload, headers=headers)
            for _ in range(4)
        )
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409]
    conflict = next(a for a in answers if a.status_code == 409)
    assert conflict.json()["code"] == "service_account_exists"
    # The bootstrap account of the settings is taken too.
    clash = await auth.client.post(
        "/auth/service-accounts",
        json={"client_id": "admin-service", "audiences": ["flightdeck:auth-internal"]},
        headers=headers,
    )
    assert clash.status_code == 409


async def test_bad_input_and_missing_accounts(auth: AuthHarness) -> None:
    headers = await _admin_headers(auth)
    for payload in (
        {"client_id": "Upper", "audiences": ["flightdeck:auth-internal"]},
        {"client_id": "ok-id", "audiences": []},
        {"client_id": "ok-id", "audiences": ["flightdeck:pipeline-everything"]},
        {"client_id": "ok-id", "audiences": ["flightdeck:auth-internal"], "description": "x" * 201},
    ):
        response = await auth.client.post("/auth/service-accounts", json=payload, headers=headers)
        assert response.status_code == 422, payload
    missing = await auth.client.delete("/auth/service-accounts/nobody", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "service_account_not_found"


async def test_only_admins_manage_service_accounts(auth: AuthHarness) -> None:
    service = bearer(await auth.service_token())
    made = await auth.client.post(
        "/auth/internal/users",
        json={
            "username": "oscar",
            "password_hash": await PasswordHasher().hash(OPERATOR_PASSWORD),
            "role": "operator",
        },
        headers=service,
    )
    assert made.status_code == 201, made.text
    operator = bearer((await auth.tokens("oscar", OPERATOR_PASSWORD))["access_token"])
    payload = {"client_id": "sneaky", "audiences": ["flightdeck:auth-internal"]}
    assert (await auth.client.post("/auth/service-accounts", json=payload)).status_code == 401
    # A service token is not for public routes (wrong audience); an operator is no admin.
    for headers, status in ((service, 401), (operator, 403)):
        refused = await auth.client.post("/auth/service-accounts", json=payload, headers=headers)
        assert refused.status_code == status, refused.text
        listed = await auth.client.get("/auth/service-accounts", headers=headers)
        assert listed.status_code == status
        deleted = await auth.client.delete("/auth/service-accounts/admin-service", headers=headers)
        assert deleted.status_code == status
    assert "auth.service_account.created" not in await auth.outbox_types()
