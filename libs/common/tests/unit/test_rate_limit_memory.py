"""Rate limits with in-process storage (no REDIS_URL), through the FastAPI dependency."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from pydantic_settings import SettingsConfigDict

from flightdeck_common.errors import PROBLEM_JSON
from flightdeck_common.rate_limit import RateLimiter, limits_from_settings, rate_limit
from flightdeck_common.settings import CommonSettings


def user_key(request: Request) -> str:
    return request.headers.get("x-user", "anonymous")


router = APIRouter(prefix="/things")


@router.post("/login", dependencies=[Depends(rate_limit("login"))])
async def login() -> dict[str, str]:
    """A route limited per client address."""
    return {"ok": "yes"}


@router.post("/login-by-user", dependencies=[Depends(rate_limit("login", key=user_key))])
async def login_by_user() -> dict[str, str]:
    """A route limited per user header."""
    return {"ok": "yes"}


@router.get("/browse", dependencies=[Depends(rate_limit("default"))])
async def browse() -> dict[str, str]:
    """A route under the default limit."""
    return {"ok": "yes"}


async def start_limited(start_service: Any, make_settings: Any) -> Any:
    service = await start_service(
        router, settings=make_settings(rate_limit_login="3/minute", redis_url=None)
    )
    return service


@pytest.fixture
async def service(start_service: Any, make_settings: Any) -> Any:
    return await start_limited(start_service, make_settings)


def other_client(app: Any, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url="http://test"
    )


async def test_rate_limit_works_on_a_service_app_as_built(
    start_service: Any, make_settings: Any
) -> None:
    service = await start_service(router, settings=make_settings(rate_limit_login="3/minute"))
    response = await service.client.post("/things/login")
    assert response.status_code == 200


async def test_fourth_call_in_the_window_is_a_429_problem(service: Any) -> None:
    for _ in range(3):
        response = await service.client.post("/things/login")
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == "3"
    response = await service.client.post("/things/login")
    assert response.status_code == 429
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["status"] == 429
    assert body["request_id"] == response.headers["x-request-id"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert f"retry in {retry_after} s" in body["detail"]
    assert response.headers["ratelimit-limit"] == "3"


async def test_refused_calls_stay_refused(service: Any) -> None:
    statuses = [(await service.client.post("/things/login")).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]


async def test_client_addresses_are_counted_separately(service: Any) -> None:
    for _ in range(3):
        assert (await service.client.post("/things/login")).status_code == 200
    assert (await service.client.post("/things/login")).status_code == 429
    async with other_client(service.app, "10.0.0.2") as other:
        for _ in range(3):
            assert (await other.post("/things/login")).status_code == 200
        assert (await other.post("/things/login")).status_code == 429


async def test_custom_key_function(service: Any) -> None:
    for _ in range(3):
        ok = await service.client.post("/things/login-by-user", headers={"x-user": "ada"})
        assert ok.status_code == 200
    refused = await service.client.post("/things/login-by-user", headers={"x-user": "ada"})
    assert refused.status_code == 429
    other = await service.client.post("/things/login-by-user", headers={"x-user": "grace"})
    assert other.status_code == 200


async def test_limits_are_independent_by_name(service: Any) -> None:
    for _ in range(4):
        await service.client.post("/things/login")
    browse = await service.client.get("/things/browse")
    assert browse.status_code == 200
    assert browse.headers["ratelimit-limit"] == "600"


async def test_each_app_has_its_own_counters(
    service: Any, start_service: Any, make_settings: Any
) -> None:
    for _ in range(4):
        await service.client.post("/things/login")
    second = await start_limited(start_service, make_settings)
    assert (await second.client.post("/things/login")).status_code == 200


def test_dependency_is_named_after_the_limit() -> None:
    assert rate_limit("login").__name__ == "rate_limit_login"


# --- limits_from_settings and RateLimiter --------------------------------------------------------


class LimitedSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_LIMITED_")
    service_name: ClassVar[str] = "limited"
    rate_limit_registration: str = "5/hour"
    rate_limits_note: str = "not a limit"


def test_limits_from_settings_collects_every_rate_limit_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLIGHTDECK_LIMITED_RATE_LIMIT_LOGIN", "7/second")
    settings = LimitedSettings(_env_file=None)
    assert limits_from_settings(settings) == {
        "default": "600/minute",
        "login": "7/second",
        "registration": "5/hour",
    }


async def test_rate_limiter_counts_per_name_and_key() -> None:
    limiter = RateLimiter(None, {"login": "2/minute", "default": "1/minute"})
    results = [await limiter.hit("login", "k1") for _ in range(3)]
    assert [allowed for allowed, _, _ in results] == [True, True, False]
    _, item, reset_in = results[-1]
    assert item.amount == 2
    assert 0 < reset_in <= 60
    assert (await limiter.hit("login", "k2"))[0] is True
    assert (await limiter.hit("default", "k1"))[0] is True


async def test_rate_limiter_reset_forgets_hits() -> None:
    limiter = RateLimiter(None, {"login": "1/minute"})
    assert (await limiter.hit("login", "k"))[0] is True
    assert (await limiter.hit("login", "k"))[0] is False
    await limiter.reset()
    assert (await limiter.hit("login", "k"))[0] is True


async def test_unknown_limit_name_is_an_error() -> None:
    limiter = RateLimiter(None, {"login": "1/minute"})
    with pytest.raises(KeyError):
        await limiter.hit("nonexistent", "k")


def test_invalid_limit_notation_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the `limits` parser's message varies
        RateLimiter(None, {"login": "often"})


async def test_unreachable_redis_falls_back_to_per_process_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", {"login": "2/minute"})
    with caplog.at_level(logging.WARNING, logger="flightdeck_common.rate_limit"):
        results = [(await limiter.hit("login", "k"))[0] for _ in range(3)]
    assert results == [True, True, False]
    warnings = [r for r in caplog.records if r.name == "flightdeck_common.rate_limit"]
    assert len(warnings) == 1  # logged once per outage, not per request
    assert "per-process" in warnings[0].getMessage()


def test_denied_hit_never_reports_zero_seconds_to_reset() -> None:
    # limits' sliding window gives `expires_in % window` == 0 when a TTL is an exact
    # multiple of the window; a denied client must still be told to wait.
    from limits import parse

    from flightdeck_common.rate_limit import seconds_to_reset

    item = parse("1/minute")
    now = 60.0 * 28_333_334 + 30  # 30 s into a minute
    assert seconds_to_reset(False, item, now, now) == pytest.approx(30.0)
    assert seconds_to_reset(False, item, now - 5, now) == pytest.approx(30.0)
    assert seconds_to_reset(False, item, now + 12.5, now) == pytest.approx(12.5)
    assert seconds_to_reset(False, item, now + 10, now + 10) == pytest.approx(20.0)
    # An allowed hit has nothing to wait for; a past reset is reported as 0.
    assert seconds_to_reset(True, item, now - 5, now) == 0.0
    assert seconds_to_reset(True, item, now + 7, now) == pytest.approx(7.0)
