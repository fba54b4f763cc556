"""ServiceTokenProvider against a fake token endpoint: caching, refresh, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr

from flightdeck_common.auth import (
    ADMIN_INTERNAL_AUDIENCE,
    AUTH_REVOCATIONS_AUDIENCE,
    SERVICE_TOKEN_PATH,
    AuthUnavailable,
    ServiceCredentialsRejected,
    ServiceTokenProvider,
)

SECRET = "a-long-client-secret-that-must-never-be-logged"


def _provider(fake_auth: Any, clock: Any, **options: Any) -> ServiceTokenProvider:
    return ServiceTokenProvider(
        SERVICE_TOKEN_PATH,
        "pipeline",
        SecretStr(SECRET),
        [AUTH_REVOCATIONS_AUDIENCE, ADMIN_INTERNAL_AUDIENCE],
        fake_auth.http,
        clock=clock,
        **options,
    )


async def test_requests_a_client_credentials_token_and_caches_it(
    fake_auth: Any, clock: Any
) -> None:
    provider = _provider(fake_auth, clock)
    assert await provider.token() == "service-token-1"
    assert await provider.token() == "service-token-1"
    assert fake_auth.token_requests == [
        {
            "grant_type": "client_credentials",
            "client_id": "pipeline",
            "client_secret": SECRET,
            "scope": f"{AUTH_REVOCATIONS_AUDIENCE} {ADMIN_INTERNAL_AUDIENCE}",
        }
    ]


async def test_refreshes_30_seconds_before_expiry(fake_auth: Any, clock: Any) -> None:
    fake_auth.expires_in = 300
    provider = _provider(fake_auth, clock)
    await provider.token()
    clock.advance(269)
    assert await provider.token() == "service-token-1"
    clock.advance(2)
    assert await provider.token() == "service-token-2"
    assert len(fake_auth.token_requests) == 2


async def test_short_lived_tokens_are_reused_for_half_their_life(
    fake_auth: Any, clock: Any
) -> None:
    fake_auth.expires_in = 20
    provider = _provider(fake_auth, clock)
    await provider.token()
    clock.advance(9)
    assert await provider.token() == "service-token-1"
    clock.advance(2)
    assert await provider.token() == "service-token-2"


async def test_concurrent_callers_share_one_request(fake_auth: Any, clock: Any) -> None:
    fake_auth.token_delay = 0.02
    provider = _provider(fake_auth, clock)
    tokens = await asyncio.gather(*(provider.token() for _ in range(20)))
    assert set(tokens) == {"service-token-1"}
    assert len(fake_auth.token_requests) == 1


async def test_invalidate_forces_a_new_token(fake_auth: Any, clock: Any) -> None:
    provider = _provider(fake_auth, clock)
    await provider.token()
    provider.invalidate()
    assert await provider.token() == "service-token-2"


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_rejected_credentials_raise_a_clear_error(
    fake_auth: Any, clock: Any, status: int
) -> None:
    fake_auth.token_status = status
    with pytest.raises(ServiceCredentialsRejected) as caught:
        await _provider(fake_auth, clock).token()
    message = str(caught.value)
    assert "'pipeline'" in message
    assert "invalid_client" in message
    assert SECRET not in message


@pytest.mark.parametrize("status", [500, 502, 503, 429, 404])
async def test_auth_errors_are_a_503(fake_auth: Any, clock: Any, status: int) -> None:
    fake_auth.token_status = status
    with pytest.raises(AuthUnavailable) as caught:
        await _provider(fake_auth, clock).token()
    assert caught.value.status_code == 503


async def test_unreachable_auth_is_a_503(fake_auth: Any, clock: Any) -> None:
    fake_auth.transport.unreachable = True
    with pytest.raises(AuthUnavailable):
        await _provider(fake_auth, clock).token()


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "bearer", "expires_in": 300},
        {"access_token": "t", "token_type": "bearer"},
        {"access_token": "t", "token_type": "bearer", "expires_in": 0},
        {"access_token": "t", "token_type": "bearer", "expires_in": "300"},
        {"access_token": "t", "token_type": "mac", "expires_in": 300},
        ["not", "an", "object"],
    ],
)
async def test_malformed_token_responses_are_a_503(fake_auth: Any, clock: Any, body: Any) -> None:
    fake_auth.token_body = body
    with pytest.raises(AuthUnavailable):
        await _provider(fake_auth, clock).token()


async def test_waiters_share_a_failure_instead_of_queueing_requests(
    fake_auth: Any, clock: Any
) -> None:
    fake_auth.token_status = 503
    fake_auth.token_delay = 0.02
    provider = _provider(fake_auth, clock)
    results = await asyncio.gather(*(provider.token() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, AuthUnavailable) for r in results)
    assert len(fake_auth.token_requests) == 1
    # A later call tries again, and succeeds once auth is back.
    fake_auth.token_status = 200
    assert await provider.token() == "service-token-1"
