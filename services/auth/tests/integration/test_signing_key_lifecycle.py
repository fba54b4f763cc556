"""Signing keys leave the JWKS once their tokens have expired (on every maintenance pass),
at once with ``rotate-keys --revoke-previous``, and a key row whose sealed private key
does not open or match its public key is never published nor trusted."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from flightdeck_auth.security.secret_box import SIGNING_KEY_COLUMN, row_binding
from flightdeck_auth.tokens.keyring import CURRENT, PREVIOUS, key_retirement_delay
from flightdeck_auth.tokens.models import SigningKey
from flightdeck_common.auth.keys import public_jwk
from flightdeck_common.db import utcnow
from flightdeck_common.testing.service_checks import bearer, run_service_cli

AuthHarness = Any
SECRET_KEY = "a-test-secret-key-for-the-signing-key-lifecycle-0123"


async def _kids(auth: AuthHarness) -> set[str]:
    response = await auth.client.get("/auth/.well-known/jwks.json")
    assert response.status_code == 200
    return {key["kid"] for key in response.json()["keys"]}


async def _rotate_now(auth: AuthHarness) -> tuple[str, str]:
    """Rotate and promote at once; returns (old kid, new kid)."""
    runtime = auth.app.state.auth_runtime
    old_kid = (await runtime.keyring.current()).kid
    new_kid = await runtime.keyring.rotate(timedelta(0))
    await runtime.keyring.maintain()
    assert (await runtime.keyring.current()).kid == new_kid
    return old_kid, new_kid


async def _age_previous_key(auth: AuthHarness, kid: str, stopped_signing_ago: timedelta) -> None:
    async with auth.app.state.resources.sessionmaker() as session, session.begin():
        await session.execute(
            update(SigningKey)
            .where(SigningKey.kid == kid)
            .values(rotated_at=utcnow() - stopped_signing_ago)
        )


async def test_previous_key_is_retired_once_its_tokens_expired_on_a_maintenance_pass(
    harness_factory: Any,
) -> None:
    auth = await harness_factory(secret_key=SECRET_KEY)
    runtime = auth.app.state.auth_runtime
    old_token = (await auth.tokens())["access_token"]
    old_kid, new_kid = await _rotate_now(auth)
    delay = key_retirement_delay(auth.settings)
    assert delay == timedelta(
        seconds=max(auth.settings.access_token_ttl_seconds, auth.settings.service_token_ttl_seconds)
        + 60
    )

    # Tokens it signed may still be live: it stays published and trusted.
    await _age_previous_key(auth, old_kid, delay - timedelta(seconds=5))
    await runtime.keyring.maintain()
    assert {old_kid, new_kid} <= await _kids(auth)
    assert (await auth.client.get("/auth/me", headers=bearer(old_token))).status_code == 200

    # Every token it signed has expired: the next pass (no rotation due) retires it.
    await _age_previous_key(auth, old_kid, delay + timedelta(seconds=1))
    await runtime.keyring.maintain()
    assert await _kids(auth) == {new_kid}
    async with auth.app.state.resources.sessionmaker() as session:
        status = await session.scalar(select(SigningKey.status).where(SigningKey.kid == old_kid))
    assert status == "retired"
    assert (await auth.client.get("/auth/me", headers=bearer(old_token))).status_code == 401


async def test_rotate_keys_revoke_previous_retires_them_at_once(
    harness_factory: Any, backend: dict[str, Any], tmp_path: Path
) -> None:
    auth = await harness_factory(secret_key=SECRET_KEY)
    old_token = (await auth.tokens())["access_token"]
    _, previous_kid = await _rotate_now(auth)  # one previous key, one current
    current_token = (await auth.tokens())["access_token"]
    before = await _kids(auth)
    assert len(before) == 2

    env = {
        "FLIGHTDECK_AUTH_DATABASE_URL": backend["database_url"],
        "FLIGHTDECK_AUTH_SECRET_KEY": SECRET_KEY,
    }
    rotated = await asyncio.to_thread(
        run_service_cli, "auth", "rotate-keys", "--revoke-previous", env=env, cwd=tmp_path
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "revoked" in rotated.stdout

    # The running service picks it up on its next maintenance pass (every 5 s).
    kids = await _kids(auth)
    for _ in range(30):
        if not kids & before:
            break
        await asyncio.sleep(0.5)
        kids = await _kids(auth)
    assert not kids & before, "revoked keys are still published"
    assert len(kids) == 1
    for token in (old_token, current_token):
        refused = await auth.client.get("/auth/me", headers=bearer(token))
        assert refused.status_code == 401
    fresh = (await auth.tokens())["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] in kids
    assert (await auth.client.get("/auth/me", headers=bearer(fresh))).status_code == 200
    assert previous_kid not in kids


def _refused_count() -> float:
    return REGISTRY.get_sample_value("flightdeck_signing_keys_refused_total") or 0.0


async def test_planted_public_keys_are_not_published_nor_trusted(harness_factory: Any) -> None:
    auth = await harness_factory(secret_key=SECRET_KEY)
    runtime = auth.app.state.auth_runtime
    genuine = await _kids(auth)
    async with auth.app.state.resources.sessionmaker() as session:
        current = await session.scalar(select(SigningKey).where(SigningKey.status == CURRENT))
    assert current is not None

    foreign = Ed25519PrivateKey.generate()
    foreign_pem = foreign.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    other_pair = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    planted = {
        # The genuine current key's sealed value, copied: sealed for another kid.
        "planted-copied": current.private_key,
        # Sealed correctly for its kid, but of another key pair than the published one.
        "planted-mismatch": runtime.box.seal(
            other_pair, bound_to=row_binding(SIGNING_KEY_COLUMN, "planted-mismatch")
        ),
        # Whoever can write the table but has no secret key.
        "planted-plain": "plain:" + foreign_pem,
        "planted-garbage": "v2:xx:AAAA",
    }
    refused_before = _refused_count()
    async with auth.app.state.resources.sessionmaker() as session, session.begin():
        for kid, sealed in planted.items():
            session.add(
                SigningKey(
                    kid=kid,
                    status=PREVIOUS,
                    private_key=sealed,
                    public_jwk=json.dumps(public_jwk(foreign.public_key(), kid)),
                    created_at=utcnow(),
                    rotated_at=utcnow(),
                )
            )
    await runtime.keyring.reload()

    assert await _kids(auth) == genuine
    assert _refused_count() - refused_before == len(planted)
    now = int(time.time())
    for kid in planted:
        forged = jwt.encode(
            {
                "iss": auth.settings.jwt_issuer,
                "aud": "flightdeck",
                "sub": "1",
                "jti": f"forged-{kid}",
                "iat": now,
                "nbf": now,
                "exp": now + 300,
                "token_use": "access",
                "role": "admin",
                "username": "admin",
            },
            foreign,
            algorithm="EdDSA",
            headers={"kid": kid},
        )
        response = await auth.client.get("/auth/me", headers=bearer(forged))
        assert response.status_code == 401, kid
    # Reloading again neither publishes them nor counts them twice.
    await runtime.keyring.reload()
    assert await _kids(auth) == genuine
    assert _refused_count() - refused_before == len(planted)
    assert (
        await auth.client.get("/auth/me", headers=bearer((await auth.tokens())["access_token"]))
    ).status_code == 200
