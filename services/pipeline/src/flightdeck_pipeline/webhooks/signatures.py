"""``X-Hub-Signature-256`` verification (HMAC-SHA256 of the raw body)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header value GitHub would send for ``body`` signed with ``secret``."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secrets: Sequence[str], body: bytes, header: str | None) -> bool:
    """Whether ``header`` is a valid signature of ``body`` by any of ``secrets``.

    Every secret is checked with a constant-time comparison (no early exit), so timing
    tells nothing about which secret, or how much of a signature, matched.
    """
    if not header or not header.startswith(PREFIX) or len(header) != len(PREFIX) + 64:
        return False
    presented = header.encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(sign(secret, body).encode(), presented)
    return matched
