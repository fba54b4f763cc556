"""The whole account story over HTTP through Traefik, against real service processes:
bootstrap admin logs in, enrols TOTP, logs in with a code, refreshes, logs out."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pyotp
import pytest

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.testing.stack_users import service_token

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


def test_the_stack_s_pipeline_account_cannot_administer_users(flightdeck_stack: Stack) -> None:
    """Issue 15, item 5, against the running stack: the pipeline's own service token reads
    the revocation feed but cannot create a user; admin's creates users, not admins."""
    with httpx.Client(base_url=flightdeck_stack.ingress_url, timeout=15, trust_env=False) as http:
        internal = f"{flightdeck_stack.service_call_url('auth')}/auth/internal"
        pipeline = {"Authorization": f"Bearer {service_token(flightdeck_stack, http, 'pipeline')}"}
        admin = {"Authorization": f"Bearer {service_token(flightdeck_stack, http, 'admin')}"}
        password = f"passphrase-{secrets.token_urlsafe(12)}"
        body = {
            "username": f"e2e-planted-{secrets.token_hex(4)}",
            "password_hash": asyncio.run(PasswordHasher().hash(password)),
            "role": "viewer",
        }
        with httpx.Client(timeout=15, trust_env=False) as direct:
            assert direct.get(f"{internal}/revocations", headers=pipeline).status_code == 200
            refused = direct.post(f"{internal}/users", json=body, headers=pipeline)
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "missing_audience"
            as_admin = direct.post(
                f"{internal}/users", json={**body, "role": "admin"}, headers=admin
            )
            assert as_admin.status_code == 403, as_admin.text
            assert as_admin.json()["code"] == "signed_approval_required"
            login = {"username": body["username"], "password": password}
            assert http.post("/auth/login", json=login).status_code == 401
            made = direct.post(f"{internal}/users", json=body, headers=admin)
            assert made.status_code == 201, made.text
        assert http.post("/auth/login", json=login).status_code == 200
