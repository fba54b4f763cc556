"""``X-Hub-Signature-256`` verification (HMAC-SHA256 of the raw body)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import TypeVar

from pydantic import SecretStr

PREFIX = "sha256="
# What GitHub sends: the prefix and 64 lowercase hex digits. Anything else is refused
# before the body is read.
WELL_FORMED = re.compile(r"^sha256=[0-9a-f]{64}$")
Secret = TypeVar("Secret", bound=SecretStr)


def sign(secret: str, body: bytes) -> str:
    """The header value GitHub would send for ``body`` signed with ``secret``."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def is_well_formed(header: str | None) -> bool:
    """Whether ``header`` has the shape of a signature (checked before reading the body)."""
    return header is not None and WELL_FORMED.match(header) is not None


def matching_secret(secrets: Sequence[Secret], body: bytes, header: str | None) -> Secret | None:
    """The secret of ``secrets`` that signed ``body`` (``header``), or None.

    Every secret is checked with a constant-time comparison (no early exit), so timing
    tells nothing about which secret, or how much of a signature, matched.
    """
    if not is_well_formed(header):
        return None
    assert header is not None
    presented = header.encode()
    matched: Secret | None = None
    for secret in secrets:
        if hmac.compare_digest(sign(secret.get_secret_value(), body).encode(), presented):
            matched = matched or secret
    return matched


def signature_matches(secrets: Sequence[str], body: bytes, header: str | None) -> bool:
    """Whether ``header`` is a valid signature of ``body`` by any of ``secrets``."""
    return matching_secret([SecretStr(s) for s in secrets], body, header) is not None
