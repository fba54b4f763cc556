"""Time-based one-time passwords (RFC 6238: SHA-1, 6 digits, 30 s steps) with replay protection.

:func:`verify_totp` returns the time-step counter a code matched; store it as the
user's ``last_used_counter`` so the same code (or an older one) is accepted only once.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime

import pyotp

TOTP_DIGITS = 6
TOTP_INTERVAL_SECONDS = 30
# 32 base32 characters = 160 bits, the HMAC-SHA1 key size RFC 4226 recommends.
SECRET_BASE32_LENGTH = 32

_CODE_PATTERN = re.compile(r"[0-9]{6}")


def new_totp_secret() -> str:
    """A fresh random TOTP secret: 160 bits as 32 base32 characters."""
    return pyotp.random_base32(length=SECRET_BASE32_LENGTH)


def provisioning_uri(secret: str, username: str, issuer: str = "Flightdeck") -> str:
    """The ``otpauth://totp/...`` URI authenticator apps import (usually as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def time_step(at: datetime) -> int:
    """The TOTP counter (30 s step number) at ``at``; naive datetimes are taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp()) // TOTP_INTERVAL_SECONDS


def verify_totp(
    secret: str,
    code: str,
    *,
    last_used_counter: int | None,
    now: datetime | None = None,
    valid_window: int = 1,
) -> int | None:
    """Check ``code`` against ``secret``; return the matched time-step counter or None.

    A code matches when it is the code of a step within ``valid_window`` steps of
    ``now`` (default: the current step +/- 1, for clock drift) AND that step is
    greater than ``last_used_counter`` (replay protection). Spaces are ignored
    (apps show "123 456"); anything else that is not exactly 6 ASCII digits is
    None, never an error.
    """
    if valid_window < 0:
        raise ValueError("valid_window must be >= 0")
    if not isinstance(code, str):
        return None
    candidate = code.strip().replace(" ", "")
    if _CODE_PATTERN.fullmatch(candidate) is None:
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL_SECONDS)
    current = time_step(now or datetime.now(UTC))
    matched: int | None = None
    # Every step in the window is computed (no early exit) so timing says nothing.
    for counter in range(current - valid_window, current + valid_window + 1):
        if counter < 0 or (last_used_counter is not None and counter <= last_used_counter):
            continue
        if hmac.compare_digest(totp.generate_otp(counter), candidate) and matched is None:
            matched = counter
    return matched
