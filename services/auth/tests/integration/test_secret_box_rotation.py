"""Rotating the secret box's key keeps every secret readable (and re-seals it under the
new key at startup); a sealed TOTP secret copied to another user's row does not open."""

from __future__ import annotations

import time
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import select, update

from flightdeck_auth.security.secret_box import box_key_id, derive_fernet_key
from flightdeck_auth.security.totp_secrets import open_totp_secret
from flightdeck_auth.tokens.models import SigningKey
from flightdeck_auth.users.models import User
from flightdeck_auth.users.service import create_user
from flightdeck_common.db import session_scope, utcnow
from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any
OLD_KEY = "the-secret-key-before-rotation-0123456789abcdef"
NEW_KEY = "the-secret-key-after-rotation-0123456789abcdefgh"
PASSWORD = "another-users-passphrase-77"


async def _enrol_totp(auth: AuthHarness) -> tuple[str, float]:
    headers = bearer((await auth.tokens())["access_token"])
    secret = (await auth.client.post("/auth/me/mfa/totp", headers=headers)).json()["secret"]
    confirmed_at = time.time()
    confirm = await auth.client.post(
        "/auth/me/mfa/totp/confirm",
        json={"code": auth.totp(secret, at=confirmed_at)},
        headers=headers,
    )
    assert confirm.status_code == 200, confirm.text
    return secret, confirmed_at


async def _mfa_login(auth: AuthHarness, username: str, password: str, code: str) -> Any:
    challenged = await auth.login(username, password)
    assert challenged.status_code == 401
    assert challenged.json()["code"] == "mfa_required"
    return await auth.client.post(
        "/auth/login/mfa", json={"mfa_token": challenged.json()["mfa_token"], "code": code}
    )


async def _stored(auth: AuthHarness) -> tuple[list[str], list[str]]:
    async with auth.app.state.resources.sessionmaker() as session:
        keys = (await session.scalars(select(SigningKey.private_key))).all()
        totp = (
            await session.scalars(select(User.totp_secret).where(User.totp_secret.is_not(None)))
        ).all()
    return list(keys), [value for value in totp if value is not None]


async def test_rotating_the_secret_key_keeps_old_values_readable(harness_factory: Any) -> None:
    before = await harness_factory(secret_key=OLD_KEY)
    secret, confirmed_at = await _enrol_totp(before)
    kids = (await before.client.get("/auth/.well-known/jwks.json")).json()["keys"]
    # A value from before rows were bound (v1, Fernet): it must still open, then migrate.
    async with before.app.state.resources.sessionmaker() as session, session.begin():
        await session.execute(
            update(User)
            .where(User.username == "admin")
            .values(
                totp_secret="v1:"
                + Fernet(derive_fernet_key(OLD_KEY)).encrypt(secret.encode()).decode()
            )
        )

    after = await harness_factory(secret_key=NEW_KEY, previous_secret_keys=OLD_KEY)
    signing_keys, totp_secrets = await _stored(after)
    new_prefix = f"v2:{box_key_id(NEW_KEY)}:"
    assert signing_keys
    assert all(value.startswith(new_prefix) for value in signing_keys)
    assert totp_secrets
    assert all(value.startswith(new_prefix) for value in totp_secrets)
    assert (await after.client.get("/auth/.well-known/jwks.json")).json()["keys"] == kids
    done = await _mfa_login(
        after, "admin", after.admin_password, after.totp(secret, 1, at=confirmed_at)
    )
    assert done.status_code == 200, done.text

    # Re-sealed: the old key can now be dropped.
    dropped = await harness_factory(secret_key=NEW_KEY)
    assert (await dropped.client.get("/auth/.well-known/jwks.json")).json()["keys"] == kids
    async with dropped.app.state.resources.sessionmaker() as session:
        admin = await session.scalar(select(User).where(User.username == "admin"))
    assert admin is not None
    assert admin.totp_secret is not None
    box = dropped.app.state.auth_runtime.box
    assert open_totp_secret(box, admin.id, admin.totp_secret) == secret


async def test_a_totp_secret_copied_to_another_user_does_not_open(harness_factory: Any) -> None:
    auth = await harness_factory(secret_key=OLD_KEY)
    secret, confirmed_at = await _enrol_totp(auth)  # the attacker's own, known secret
    runtime = auth.app.state.auth_runtime
    async with session_scope(auth.app.state.resources.sessionmaker) as session:
        victim, _ = await create_user(
            session,
            username="victim",
            password_hash=await runtime.hasher.hash(PASSWORD),
            role="viewer",
            actor="test",
        )
        victim_id = victim.id
    async with auth.app.state.resources.sessionmaker() as session, session.begin():
        admin_sealed = await session.scalar(
            select(User.totp_secret).where(User.username == "admin")
        )
        await session.execute(
            update(User)
            .where(User.id == victim_id)
            .values(totp_secret=admin_sealed, totp_confirmed_at=utcnow())
        )
    refused = await _mfa_login(auth, "victim", PASSWORD, auth.totp(secret, 1, at=confirmed_at))
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_mfa_code"
    # The owner's row still opens.
    own = await _mfa_login(
        auth, "admin", auth.admin_password, auth.totp(secret, 1, at=confirmed_at)
    )
    assert own.status_code == 200, own.text
