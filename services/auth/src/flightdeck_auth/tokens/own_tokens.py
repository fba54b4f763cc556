"""Auth's own service token (``svc:auth``), minted locally: auth needs no client secret
to deliver its audit events to the admin service."""

from __future__ import annotations

import time

import httpx
from fastapi import FastAPI

from flightdeck_auth.runtime import AuthRuntime
from flightdeck_common.auth.claims import ADMIN_INTERNAL_AUDIENCE
from flightdeck_common.resources import Resources

OWN_CLIENT_ID = "auth"


class OwnServiceTokens:
    """A :class:`~flightdeck_common.auth.service_tokens.TokenProvider` signing with auth's
    current key; the token is reused until a minute before it expires."""

    def __init__(self, runtime: AuthRuntime, audiences: tuple[str, ...]) -> None:
        self._runtime = runtime
        self._audiences = list(audiences)
        self._token: str | None = None
        self._refresh_at = 0.0

    async def token(self) -> str:
        if self._token is None or time.monotonic() >= self._refresh_at:
            issued = await self._runtime.issuer.service_token(OWN_CLIENT_ID, self._audiences)
            self._token = issued.token
            self._refresh_at = time.monotonic() + max(issued.expires_in - 60, issued.expires_in / 2)
        return self._token

    def invalidate(self) -> None:
        self._token = None


def own_admin_tokens(
    app: FastAPI, resources: Resources, http: httpx.AsyncClient
) -> OwnServiceTokens:
    """Token factory for the outbox relay hook (needs auth's runtime, made earlier)."""
    runtime: AuthRuntime = app.state.auth_runtime
    return OwnServiceTokens(runtime, (ADMIN_INTERNAL_AUDIENCE,))
