"""How pipeline and admin trust auth's tokens: a lifespan hook that installs the verifier.

Keys come from auth's JWKS (cached; an unknown ``kid`` refetches at most once a minute).
Revocations come from Redis when ``REDIS_URL`` is set (auth writes them there), otherwise
from auth's internal revocation feed, followed every ``revocation_sync_seconds`` with this
service's own client credentials, so a logout or deactivation reaches every service in
seconds in the embedded mode too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from flightdeck_common.auth.dependencies import AuthContext, install_auth
from flightdeck_common.auth.keys import JWKS_PATH, JwksKeySource
from flightdeck_common.auth.revocation import (
    REVOCATION_FEED_PATH,
    MemoryRevocations,
    RedisRevocations,
    RevocationChecker,
    RevocationFeedFollower,
)
from flightdeck_common.auth.service_tokens import SERVICE_TOKEN_PATH, ServiceTokenProvider
from flightdeck_common.auth.verifier import TokenVerifier
from flightdeck_common.resources import Resources

logger = logging.getLogger(__name__)

# Tests hand the hook a transport (e.g. httpx.ASGITransport to an in-process auth app).
TRANSPORT_KEY = "auth_transport"


@contextlib.asynccontextmanager
async def auth_client_lifespan(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
    """Install token verification for a service that is not auth itself."""
    settings = resources.settings
    base = settings.auth_url.rstrip("/")
    transport = resources.extras.get(TRANSPORT_KEY)
    async with httpx.AsyncClient(timeout=5.0, transport=transport, trust_env=False) as http:
        provider = None
        if settings.service_client_id and settings.service_client_secret:
            provider = ServiceTokenProvider(
                f"{base}{SERVICE_TOKEN_PATH}",
                settings.service_client_id,
                settings.service_client_secret,
                list(settings.auth_audiences),
                http,
            )
        follower = None
        revocations: RevocationChecker
        if resources.redis is not None:
            revocations = RedisRevocations(resources.redis)
        else:
            memory = MemoryRevocations()
            revocations = memory
            if provider is not None:
                follower = RevocationFeedFollower(
                    f"{base}{REVOCATION_FEED_PATH}",
                    provider,
                    memory,
                    http=http,
                    interval=settings.revocation_sync_seconds,
                )
                follower.start()
            else:
                logger.warning(
                    "no REDIS_URL and no service credentials: logouts and deactivations made "
                    "in auth are not seen here until the tokens expire"
                )
        install_auth(
            app,
            AuthContext(
                TokenVerifier(
                    JwksKeySource(f"{base}{JWKS_PATH}", http),
                    settings.jwt_issuer,
                    revocations=revocations,
                )
            ),
        )
        app.state.revocation_follower = follower
        # For calls to auth's internal API (admin's user administration and approvals).
        app.state.auth_http = http
        app.state.auth_service_tokens = provider
        try:
            yield
        finally:
            if follower is not None:
                await follower.stop()
