"""Admins create, list and deactivate service accounts over HTTP (creating one takes the
admin's password and a TOTP code); the secret is shown once and works at the token endpoint
until the account is deactivated."""

from __future__ import annotations

import asyncio
from typing import Any

from flightdeck_auth.service_accounts import service
from flightdeck_common.db import session_scope
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
    secret = await auth.enrol_totp(headers)
    created = await auth.client.post(
        "/auth/service-accounts",
        json={
            "client_id": "release-bot",
            "audiences": ["flightdeck:admin-internal"],
            "description": "release tooling",
            **auth.step_up(secret),
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
    assert "current_password" not in body

    issued = await _token(auth, "release-bot", secret)
    assert issued.status_code == 200, issued.text
    assert issued.json()["scope"] == "flightdeck:admin-internal"
    # Only the audiences it was given.
    refused = await _token(auth, "release-bot", secret, scope="flightdeck:auth-users")
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
    # Each HTTP creation spends a TOTP code, so the race is run on the domain service:
    # four creations of one id in four sessions at once.
    rt = auth.app.state.auth_runtime
    sessionmaker = auth.app.state.resources.sessionmaker

    async def create() -> str:
        try:
            async with session_scope(sessionmaker) as session:
                await service.create_service_account(
                    session, rt, "ci-sync", ["flightdeck:auth-users"], description="", actor="t"
                )
        except Exception as exc:
            return str(getattr(exc, "code", exc))
        return "created"

    answers = await asyncio.gather(*(create() for _ in range(4)))
    assert sorted(answers) == ["created", *["service_account_exists"] * 3]
    # Over HTTP, the bootstrap account of the settings is taken too.
    headers = await _admin_headers(auth)
    secret = await auth.enrol_totp(headers)
    clash = await auth.client.post(
        "/auth/service-accounts",
        json={
            "client_id": "admin-service",
            "audiences": ["flightdeck:auth-users"],
            **auth.step_up(secret),
        },
        headers=headers,
    )
    assert clash.status_code == 409, clash.text
    assert clash.json()["code"] == "service_account_exists"


async def test_bad_input_and_missing_accounts(auth: AuthHarness) -> None:
    headers = await _admin_headers(auth)
    step_up = {"current_password": "x", "totp_code": "123456"}
    for payload in (
        {"client_id": "Upper", "audiences": ["flightdeck:auth-users"]},
        {"client_id": "ok-id", "audiences": []},
        {"client_id": "ok-id", "audiences": ["flightdeck:pipeline-everything"]},
        # The audience that was every capability at once is gone.
        {"client_id": "ok-id", "audiences": ["flightdeck:auth-internal"]},
        {"client_id": "ok-id", "audiences": ["flightdeck:auth-users"], "description": "x" * 201},
        {"client_id": "ok-id", "audiences": ["flightdeck:auth-users"], "totp_code": "1"},
    ):
        payload = {**step_up, **payload} if "totp_code" not in payload else payload
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
    payload = {
        "client_id": "sneaky",
        "audiences": ["flightdeck:auth-users"],
        "current_password": "x",
        "totp_code": "123456",
    }
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
