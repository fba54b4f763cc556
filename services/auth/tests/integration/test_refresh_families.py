"""Refresh-token families: an absolute lifetime however often they are refreshed, and a
reused (already rotated) token revokes the whole subject, access tokens included."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select, update

from flightdeck_auth.tokens.models import RefreshToken, Revocation
from flightdeck_auth.tokens.refresh import hash_token
from flightdeck_common.auth.revocation import REDIS_SUBJECT_PREFIX
from flightdeck_common.testing.service_checks import bearer

AuthHarness = Any
FAMILY_MAX_AGE = 3600


async def _row(auth: AuthHarness, token: str) -> RefreshToken:
    async with auth.app.state.resources.sessionmaker() as session:
        row = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == hash_token(token))
        )
    assert row is not None
    return row


async def _refresh(auth: AuthHarness, token: str) -> Any:
    return await auth.client.post("/auth/token/refresh", json={"refresh_token": token})


async def test_a_family_never_outlives_its_absolute_lifetime(harness_factory: Any) -> None:
    auth = await harness_factory(refresh_family_max_age_seconds=FAMILY_MAX_AGE)
    assert auth.settings.refresh_token_ttl_seconds > FAMILY_MAX_AGE
    first = await auth.tokens()
    login_row = await _row(auth, first["refresh_token"])
    family_ends = login_row.created_at + timedelta(seconds=FAMILY_MAX_AGE)
    assert login_row.expires_at <= family_ends

    refreshed = await _refresh(auth, first["refresh_token"])
    assert refreshed.status_code == 200
    successor = await _row(auth, refreshed.json()["refresh_token"])
    # Each refresh would grant a full TTL; the family's end caps it.
    assert successor.family_id == login_row.family_id
    assert successor.expires_at <= family_ends

    # The login that started the family is now older than the cap: refused, family revoked.
    async with auth.app.state.resources.sessionmaker() as session, session.begin():
        for row_id, created, expires in (
            (login_row.id, login_row.created_at, login_row.expires_at),
            (successor.id, successor.created_at, successor.expires_at),
        ):
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.id == row_id)
                .values(
                    created_at=created - timedelta(seconds=FAMILY_MAX_AGE + 1),
                    # Still within its own TTL: only the family's age refuses it.
                    expires_at=expires + timedelta(days=1),
                )
            )
    late = await _refresh(auth, refreshed.json()["refresh_token"])
    assert late.status_code == 401
    assert late.headers["content-type"] == "application/problem+json"
    assert (await _row(auth, refreshed.json()["refresh_token"])).revoked_reason == (
        "family_expired"
    )
    # Logging in again starts a new family.
    assert (await _refresh(auth, (await auth.tokens())["refresh_token"])).status_code == 200


async def test_reuse_revokes_every_access_token_of_the_subject(
    auth: AuthHarness, backend: dict[str, Any]
) -> None:
    first = await auth.tokens()
    other_session = await auth.tokens()
    rotated = await _refresh(auth, first["refresh_token"])
    assert rotated.status_code == 200
    live = [first["access_token"], other_session["access_token"], rotated.json()["access_token"]]
    for token in live:
        assert (await auth.client.get("/auth/me", headers=bearer(token))).status_code == 200

    reuse = await _refresh(auth, first["refresh_token"])  # the copy a thief kept
    assert reuse.status_code == 401
    for token in live:
        me = await auth.client.get("/auth/me", headers=bearer(token))
        assert me.status_code == 401
        assert me.json()["code"] == "token_revoked"

    user_id = first["user"]["id"]
    # Through the mechanism the other services check: the revocation table (their feed)
    # and, with Redis, the shared denylist.
    async with auth.app.state.resources.sessionmaker() as session:
        reasons = (
            await session.scalars(
                select(Revocation.reason).where(Revocation.subject == str(user_id))
            )
        ).all()
    assert "refresh_token_reuse" in reasons
    if "redis_url" in backend:
        redis = Redis.from_url(backend["redis_url"])
        try:
            assert await redis.get(REDIS_SUBJECT_PREFIX + str(user_id)) is not None
        finally:
            await redis.aclose()

    # The user can log in again; the new session works.
    fresh = await auth.tokens()
    assert (
        await auth.client.get("/auth/me", headers=bearer(fresh["access_token"]))
    ).status_code == 200
