"""Client addresses: which proxies may name them, and how per-address limits count them."""

from __future__ import annotations

import ipaddress

TRUST_EVERY_PEER = "*"
IPV6_CLIENT_PREFIX = 64
"""An IPv6 client usually owns a whole /64 (one customer line, one cloud instance): it can
pick a new address in it for every request, so per-address limits count the /64."""


def address_key(address: str) -> str:
    """The key a per-client-address limit counts ``address`` under.

    IPv4 addresses are themselves; an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is
    its IPv4 address; any other IPv6 address is its /64 network (``2001:db8:1:2::/64``).
    What is not an IP address (a Unix socket peer, ``unknown``) is kept as it is.
    """
    text = address.strip()
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed)


def parse_trusted_proxies(value: str) -> list[str]:
    """The entries of a ``FORWARDED_ALLOW_IPS`` value (comma-separated IP addresses and
    CIDR networks, or ``*``), each checked; ValueError names the first invalid one.

    uvicorn would take an entry that is neither (a host name, a typo) as a literal that
    never matches a TCP peer, so the mistake would only show as every client sharing the
    ingress's address; refusing it at start makes it visible.
    """
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise ValueError("name at least one proxy address (127.0.0.1 trusts none but loopback)")
    if TRUST_EVERY_PEER in entries:
        if len(entries) > 1:
            raise ValueError(f"{TRUST_EVERY_PEER!r} cannot be combined with addresses")
        return entries
    for entry in entries:
        try:
            if "/" in entry:
                ipaddress.ip_network(entry, strict=False)
            else:
                ipaddress.ip_address(entry)
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or CIDR network (host names are not resolved)"
            ) from None
    return entries


def trusts_every_peer(value: str) -> bool:
    """Whether a ``FORWARDED_ALLOW_IPS`` value trusts X-Forwarded-For from any peer."""
    return TRUST_EVERY_PEER in (entry.strip() for entry in value.split(","))
