"""Service-account tokens from auth (OAuth2 client_credentials), cached until near expiry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from flightdeck_common.auth.errors import AuthUnavailable

SERVICE_TOKEN_PATH = "/auth/service-token"  # noqa: S105 (a path, not a secret)

logger = logging.getLogger(__name__)


class TokenProvider(Protocol):
    """Hands out a bearer token for service-to-service calls."""

    async def token(self) -> str:
        """A token that is valid for a while yet."""
        ...

    def invalidate(self) -> None:
        """Forget the cached token (the server rejected it); the next call fetches anew."""
        ...


class ServiceCredentialsRejected(RuntimeError):
    """Auth refused this service's client credentials: a configuration error, not an outage."""


class ServiceTokenProvider:
    """Obtains and caches this service's access token from ``POST /auth/service-token``.

    The token is reused until ``refresh_margin`` seconds (at most half its lifetime) before
    it expires. Concurrent callers share one request; when that request fails, the callers
    that were waiting for it get the same error instead of queueing more requests.

    Raises ``AuthUnavailable`` (503) when auth cannot be reached, answers 5xx/429/404 or
    something that is not a token; ``ServiceCredentialsRejected`` on 400/401/403.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str | SecretStr,
        audiences: Sequence[str],
        http: httpx.AsyncClient,
        *,
        refresh_margin: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self.audiences = tuple(audiences)
        self._http = http
        self._refresh_margin = refresh_margin
        self._timeout = timeout
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._fetches_done = 0
        self._last_error: Exception | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """The cached token, or a new one when it is (nearly) expired."""
        cached = self._fresh()
        if cached is not None:
            return cached
        fetches_seen = self._fetches_done
        async with self._lock:
            cached = self._fresh()
            if cached is not None:
                return cached
            if self._fetches_done != fetches_seen and self._last_error is not None:
                raise self._last_error  # the fetch we waited for has just failed
            try:
                token = await self._fetch()
            except (AuthUnavailable, ServiceCredentialsRejected) as exc:
                self._last_error = exc
                raise
            finally:
                self._fetches_done += 1
            self._last_error = None
            return token

    def invalidate(self) -> None:
        """Forget the cached token; the next ``token()`` fetches a new one."""
        self._token = None

    def _fresh(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def _fetch(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        if self.audiences:
            form["scope"] = " ".join(self.audiences)
        requested_at = self._clock()
        try:
            response = await self._http.post(
                self.token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            logger.warning("service token request to %s failed: %r", self.token_url, exc)
            raise AuthUnavailable("The auth service cannot be reached.") from exc
        if response.status_code in (400, 401, 403):
            reason = _error_code(response)
            raise ServiceCredentialsRejected(
                f"auth rejected the credentials of service account {self.client_id!r} "
                f"(HTTP {response.status_code}: {reason})"
            )
        if response.status_code != 200:
            logger.warning(
                "service token request to %s answered HTTP %s",
                self.token_url,
                response.status_code,
            )
            raise AuthUnavailable("The auth service cannot issue a service token right now.")
        token, expires_in = _parse_token_response(response)
        margin = min(self._refresh_margin, expires_in / 2)
        self._token = token
        self._refresh_at = requested_at + expires_in - margin
        return token


def _parse_token_response(response: httpx.Response) -> tuple[str, float]:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        token = body.get("access_token")
        expires_in = body.get("expires_in")
        token_type = body.get("token_type", "bearer")
        if (
            isinstance(token, str)
            and token
            and isinstance(expires_in, int | float)
            and not isinstance(expires_in, bool)
            and expires_in > 0
            and isinstance(token_type, str)
            and token_type.lower() == "bearer"
        ):
            return token, float(expires_in)
    raise AuthUnavailable("The auth service answered with a malformed token response.")


def _error_code(response: httpx.Response) -> str:
    """The OAuth ``error`` or problem ``code`` of an error response (never the body itself)."""
    try:
        body: Any = response.json()
    except ValueError:
        return "no error code"
    if isinstance(body, dict):
        for name in ("error", "code"):
            value = body.get(name)
            if isinstance(value, str) and len(value) <= 64:
                return value
    return "no error code"
