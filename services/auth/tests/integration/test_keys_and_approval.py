"""Signing key rotation, JWKS, approval keys, and malformed input."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any


def _pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_jwks_publishes_ed25519_keys(auth: AuthHarness) -> None:
    response = await auth.client.get("/auth/.well-known/jwks.json")
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("OKP", "Ed25519", "EdDSA")
    assert "d" not in key  # never the private part


async def test_rotation_keeps_old_tokens_valid(auth: AuthHarness) -> None:
    before = (await auth.tokens())["access_token"]
    runtime = auth.app.state.auth_runtime
    next_kid = await runtime.keyring.rotate(timedelta(seconds=1))
    # Published before it signs, so every verifier's JWKS cache learns it in time.
    keys = (await auth.client.get("/auth/.well-known/jwks.json")).json()["keys"]
    assert next_kid in [k["kid"] for k in keys]
    not_yet = (await auth.tokens())["access_token"]
    assert jwt.get_unverified_header(not_yet)["kid"] != next_kid
    await asyncio.sleep(1.1)
    await runtime.keyring.maintain()  # what the background task does every few seconds
    after = (await auth.tokens())["access_token"]
    assert jwt.get_unverified_header(after)["kid"] == next_kid
    assert len((await auth.client.get("/auth/.well-known/jwks.json")).json()["keys"]) == 2
    for token in (before, after):
        assert (await auth.client.get("/auth/me", headers=bearer(token))).status_code == 200


async def test_keys_survive_a_restart(harness_factory: Any, backend: dict[str, Any]) -> None:
    first = await harness_factory()
    token = (await first.tokens())["access_token"]
    second = await harness_factory()  # same database, new process state
    assert (await second.client.get("/auth/me", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize(
    "key",
    [ed25519.Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)],
    ids=["ed25519", "rsa2048"],
)
async def test_approval_key_accepts_ed25519_and_rsa(auth: AuthHarness, key: Any) -> None:
    pair = await auth.tokens()
    secret = await auth.enrol_totp(bearer(pair["access_token"]))
    response = await auth.client.put(
        "/auth/me/approval-key",
        json={"public_key_pem": _pem(key), **auth.step_up(secret)},
        headers=bearer(pair["access_token"]),
    )
    assert response.status_code == 200, response.text
    assert response.json()["has_approval_key"] is True
    service = await auth.service_token()
    stored = await auth.client.get(
        f"/auth/internal/users/{pair['user']['id']}/approval-key", headers=bearer(service)
    )
    assert stored.status_code == 200
    assert stored.json()["fingerprint"] == response.json()["approval_key_fingerprint"]
    assert "auth.user.approval_key_changed" in await auth.outbox_types()


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        _pem(rsa.generate_private_key(65537, 1024)),  # noqa: S505 (must be refused)
        _pem(ec.generate_private_key(ec.SECP256R1())),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ],
    ids=["garbage", "rsa1024", "ec", "truncated"],
)
async def test_bad_approval_keys_are_422(auth: AuthHarness, pem: str) -> None:
    token = (await auth.tokens())["access_token"]
    secret = await auth.enrol_totp(bearer(token))
    response = await auth.client.put(
        "/auth/me/approval-key",
        json={"public_key_pem": pem, **auth.step_up(secret)},
        headers=bearer(token),
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/login", {"username": "x" * 1_000_000, "password": "y"}),
        ("/auth/login", {"username": 5, "password": ["list"]}),
        ("/auth/login", {}),
        ("/auth/login", "just a string"),
        ("/auth/login/mfa", {"mfa_token": "t", "code": 123456}),
        ("/auth/login/mfa", {"mfa_token": "t" * 600, "code": "123456"}),
        ("/auth/token/refresh", {"refresh_token": None}),
        ("/auth/token/refresh", {"refresh_token": "unknown-token"}),
    ],
)
async def test_malformed_input_is_4xx_never_500(auth: AuthHarness, path: str, body: Any) -> None:
    response = await auth.client.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_tokens_are_required_and_checked(auth: AuthHarness) -> None:
    assert (await auth.client.get("/auth/me")).status_code == 401
    garbage = await auth.client.get("/auth/me", headers=bearer("a.b.c"))
    assert garbage.status_code == 401
    assert garbage.headers["www-authenticate"].startswith("Bearer")
