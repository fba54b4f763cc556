"""The services' own names are reserved client ids: admin records an audit event's service
as the submitting account, so an account an admin creates must not be named like one."""

from __future__ import annotations

from typing import Any

import pytest

from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any


@pytest.mark.parametrize("client_id", ["auth", "pipeline", "admin"])
async def test_an_admin_cannot_create_an_account_named_like_a_service(
    auth: AuthHarness, client_id: str
) -> None:
    headers = bearer((await auth.tokens())["access_token"])
    secret = await auth.enrol_totp(headers)
    refused = await auth.client.post(
        "/auth/service-accounts",
        json={
            "client_id": client_id,
            "audiences": ["flightdeck:admin-internal"],
            **auth.step_up(secret),
        },
        headers=headers,
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "service_account_exists"
    assert "reserved" in refused.json()["detail"]
    listed = await auth.client.get("/auth/service-accounts", headers=headers)
    assert client_id not in {item["client_id"] for item in listed.json()["items"]}
    # A name that only starts like one is an ordinary id.
    allowed = await auth.client.post(
        "/auth/service-accounts",
        json={
            "client_id": f"{client_id}-helper",
            "audiences": ["flightdeck:admin-internal"],
            **auth.step_up(secret, 1),
        },
        headers=headers,
    )
    assert allowed.status_code == 201, allowed.text
