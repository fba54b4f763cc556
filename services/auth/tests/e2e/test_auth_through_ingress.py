"""The whole account story over HTTP through Traefik, against real service processes:
bootstrap admin logs in, enrols TOTP, logs in with a code, refreshes, logs out."""

from __future__ import annotations

import time

import httpx
import pyotp
import pytest

from flightdeck_common.devstack.stack import Stack

pytestmark = pytest.mark.e2e


def test_bootstrap_admin_account_story(flightdeck_stack: Stack) -> None:
    password = flightdeck_stack.config.extra_env["FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_PASSWORD"]
    with httpx.Client(base_url=flightdeck_stack.ingress_url, timeout=15, trust_env=False) as http:
        login = http.post("/auth/login", json={"username": "admin", "password": password})
        assert login.status_code == 200, login.text
        access = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {access}"}

        enrol = http.post("/auth/me/mfa/totp", headers=headers)
        assert enrol.status_code == 201, enrol.text
        totp = pyotp.TOTP(enrol.json()["secret"])
        confirmed_at = time.time()
        confirm = http.post(
            "/auth/me/mfa/totp/confirm", json={"code": totp.at(confirmed_at)}, headers=headers
        )
        assert confirm.status_code == 200, confirm.text

        challenged = http.post("/auth/login", json={"username": "admin", "password": password})
        assert challenged.status_code == 401
        assert challenged.json()["code"] == "mfa_required"
        second = http.post(
            "/auth/login/mfa",
            json={"mfa_token": challenged.json()["mfa_token"], "code": totp.at(confirmed_at + 30)},
        )
        assert second.status_code == 200, second.text
        pair = second.json()

        refreshed = http.post("/auth/token/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
        new_pair = refreshed.json()
        new_headers = {"Authorization": f"Bearer {new_pair['access_token']}"}
        assert http.get("/auth/me", headers=new_headers).json()["mfa_enabled"] is True

        out = http.post(
            "/auth/logout", json={"refresh_token": new_pair["refresh_token"]}, headers=new_headers
        )
        assert out.status_code == 204
        assert http.get("/auth/me", headers=new_headers).status_code == 401
        again = http.post("/auth/token/refresh", json={"refresh_token": new_pair["refresh_token"]})
        assert again.status_code == 401

        jwks = http.get("/auth/.well-known/jwks.json")
        assert jwks.status_code == 200
        assert jwks.json()["keys"][0]["alg"] == "EdDSA"
