"""Startup work of the auth service: keys, runtime, development bootstrap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI

from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.reseal import reseal_secrets
from flightdeck_auth.security.risk import RiskRules
from flightdeck_auth.security.secret_box import SecretBox
from flightdeck_auth.security.throttle import LoginThrottle, MemoryThrottleStore, RedisThrottleStore
from flightdeck_auth.service_accounts.service import (
    parse_bootstrap_accounts,
    upsert_service_account,
)
from flightdeck_auth.settings import USER_AUDIENCE, Settings
from flightdeck_auth.tokens.issuer import TokenIssuer
from flightdeck_auth.tokens.keyring import KeyRing, key_retirement_delay
from flightdeck_auth.tokens.revocations import DatabaseRevocations, RevocationRepository, Revoker
from flightdeck_auth.users.service import bootstrap_admin
from flightdeck_common.auth.dependencies import AuthContext, install_auth
from flightdeck_common.auth.revocation import RedisRevocations
from flightdeck_common.auth.verifier import TokenVerifier
from flightdeck_common.db import session_scope
from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.resources import Resources

logger = logging.getLogger(__name__)


def build_runtime(settings: Settings, resources: Resources) -> AuthRuntime:
    if settings.secret_key is None:
        logger.warning(
            "FLIGHTDECK_AUTH_SECRET_KEY is not set: TOTP secrets and signing keys are stored "
            "unencrypted (development only)"
        )
    box = SecretBox(settings.secret_box_keys)
    # A replaced key stays published until every token it signed has expired.
    keyring = KeyRing(resources.sessionmaker, box, key_retirement_delay(settings))
    redis_revocations = RedisRevocations(resources.redis) if resources.redis is not None else None
    store = (
        RedisThrottleStore(resources.redis)
        if resources.redis is not None
        else MemoryThrottleStore()
    )
    return AuthRuntime(
        settings=settings,
        hasher=PasswordHasher(
            settings.password_pepper.get_secret_value() if settings.password_pepper else None,
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
        ),
        box=box,
        keyring=keyring,
        issuer=TokenIssuer(keyring, settings),
        throttle=LoginThrottle(
            store,
            max_failures_per_user=settings.login_max_failures_per_user,
            max_failures_per_ip=settings.login_max_failures_per_ip,
            window_seconds=settings.login_failure_window_seconds,
            base_lock_seconds=settings.login_base_lock_seconds,
            max_lock_seconds=settings.login_max_lock_seconds,
        ),
        revoker=Revoker(redis_revocations, settings.access_token_ttl_seconds),
        risk_rules=RiskRules(
            challenge_at=settings.risk_challenge_at,
            deny_at=settings.risk_deny_at,
            off_hours_start=settings.risk_off_hours_start,
            off_hours_end=settings.risk_off_hours_end,
        ),
    )


@contextlib.asynccontextmanager
async def auth_lifespan(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
    settings = resources.settings
    assert isinstance(settings, Settings)
    runtime = build_runtime(settings, resources)
    await reseal_secrets(resources.sessionmaker, runtime.box)
    await runtime.keyring.ensure_key()
    await runtime.hasher.warm_up()  # so the first unknown-user login costs what later ones do
    maintenance = asyncio.create_task(runtime.keyring.run_maintenance(), name="key-maintenance")
    housekeeping = asyncio.create_task(_housekeeping(resources), name="auth-housekeeping")
    app.state.auth_runtime = runtime
    install_auth(
        app,
        AuthContext(
            verifier=TokenVerifier(
                runtime.keyring,
                issuer=settings.jwt_issuer,
                revocations=DatabaseRevocations(resources.sessionmaker),
            ),
            user_audience=USER_AUDIENCE,
        ),
    )
    if not settings.is_production:
        await _development_bootstrap(runtime, resources)
    try:
        yield
    finally:
        for task in (maintenance, housekeeping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _housekeeping(resources: Resources, interval: float = 3600.0) -> None:
    """Drop revocations whose tokens have long expired (the feed only serves live ones)."""
    while True:
        try:
            async with session_scope(resources.sessionmaker) as session:
                purged = await RevocationRepository(session).purge_expired()
            if purged:
                logger.info("purged %d expired revocations", purged)
        except Exception:
            logger.exception("auth housekeeping failed; retrying later")
        await asyncio.sleep(interval)


async def _development_bootstrap(runtime: AuthRuntime, resources: Resources) -> None:
    async with session_scope(resources.sessionmaker) as session:
        password = await bootstrap_admin(session, runtime)
        spec = runtime.settings.bootstrap_service_accounts
        if spec is not None:
            for client_id, secret, audiences in parse_bootstrap_accounts(spec.get_secret_value()):
                await upsert_service_account(session, runtime, client_id, audiences, secret=secret)
    if password is not None:
        username = runtime.settings.bootstrap_admin_username
        # Printed once, on the console only: it is not stored anywhere in clear.
        print(
            f"\n  bootstrap admin created: username={username} password={password}\n"
            "  (shown once; set FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_PASSWORD to choose it)\n",
            file=sys.stderr,
            flush=True,
        )
        logger.warning("the bootstrap admin's generated password was printed once, above")
