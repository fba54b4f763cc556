"""Client addresses: per-address limit keys (IPv6 by /64) and the trusted-proxy setting."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends
from pydantic import ValidationError

from flightdeck_common.cli import _trusted_proxies
from flightdeck_common.client_addresses import address_key, parse_trusted_proxies
from flightdeck_common.rate_limit import rate_limit
from flightdeck_common.settings import CommonSettings, Environment


def test_two_addresses_of_one_ipv6_slash_64_share_a_key() -> None:
    first = address_key("2001:db8:1:2::1")
    assert first == address_key("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert first == address_key("2001:0db8:0001:0002:0000:0000:0000:0001")  # any spelling
    assert first == "2001:db8:1:2::/64"


def test_addresses_of_different_slash_64s_do_not_share_a_key() -> None:
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db9:1:2::1")


def test_ipv4_and_ipv4_mapped_addresses_are_the_ipv4_address() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") != address_key("192.0.2.8")


def test_what_is_not_an_address_is_kept() -> None:
    assert address_key("unknown") == "unknown"
    assert address_key(" 192.0.2.7 ") == "192.0.2.7"


router = APIRouter(prefix="/things")


@router.post("/login", dependencies=[Depends(rate_limit("login"))])
async def login() -> dict[str, str]:
    """A route limited per client address."""
    return {"ok": "yes"}


def _client(app: Any, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url="http://test"
    )


async def test_rate_limits_count_an_ipv6_client_by_its_slash_64(
    start_service: Any, make_settings: Any
) -> None:
    service = await start_service(
        router, settings=make_settings(rate_limit_login="2/minute", redis_url=None)
    )
    # One client hopping through its /64: the third request is refused.
    statuses = []
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3"):
        async with _client(service.app, host) as client:
            statuses.append((await client.post("/things/login")).status_code)
    assert statuses == [200, 200, 429]
    async with _client(service.app, "2001:db8:1:3::1") as neighbour:
        assert (await neighbour.post("/things/login")).status_code == 200


@pytest.mark.parametrize(
    ("value", "entries"),
    [
        ("127.0.0.1", ["127.0.0.1"]),
        (" 10.0.0.0/8 , 192.0.2.10,::1 ", ["10.0.0.0/8", "192.0.2.10", "::1"]),
        ("fd00::/8", ["fd00::/8"]),
        ("*", ["*"]),
    ],
)
def test_trusted_proxies_are_addresses_or_networks(value: str, entries: list[str]) -> None:
    assert parse_trusted_proxies(value) == entries


@pytest.mark.parametrize("value", ["", " , ", "traefik", "10.0.0.0/33", "*,10.0.0.1", "1.2.3"])
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"address|combined"):
        parse_trusted_proxies(value)


def test_the_setting_is_checked_and_production_refuses_every_peer() -> None:
    assert CommonSettings(
        _env_file=None, forwarded_allow_ips="10.244.0.0/16"
    ).forwarded_allow_ips == ("10.244.0.0/16")
    assert CommonSettings(_env_file=None).forwarded_allow_ips == "127.0.0.1"
    with pytest.raises(ValidationError, match="not an IP address"):
        CommonSettings(_env_file=None, forwarded_allow_ips="traefik")
    assert (
        CommonSettings(_env_file=None, forwarded_allow_ips="*").forwarded_allow_ips == "*"
    )  # development
    with pytest.raises(ValidationError, match="FORWARDED_ALLOW_IPS must name"):
        CommonSettings(_env_file=None, environment="production", forwarded_allow_ips="*")


def test_serve_takes_the_setting_unless_the_flag_says_otherwise() -> None:
    settings = CommonSettings(_env_file=None, forwarded_allow_ips="10.244.0.0/16")
    assert _trusted_proxies(settings, None) == "10.244.0.0/16"
    assert _trusted_proxies(settings, "192.0.2.1, 192.0.2.2") == "192.0.2.1,192.0.2.2"
    assert _trusted_proxies(settings, "*") == "*"  # development
    with pytest.raises(ValueError, match="not an IP address"):
        _trusted_proxies(settings, "ingress")
    production = CommonSettings.model_construct(
        environment=Environment.PRODUCTION, forwarded_allow_ips="10.244.0.0/16"
    )
    with pytest.raises(ValueError, match="refused in production"):
        _trusted_proxies(production, "*")
