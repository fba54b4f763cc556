"""TOTP secrets, provisioning URIs and verification with drift window and replay protection."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from flightdeck_auth.security.totp import (
    new_totp_secret,
    provisioning_uri,
    time_step,
    verify_totp,
)

NOW = datetime(2026, 11, 25, 12, 0, 10, tzinfo=UTC)
STEP = timedelta(seconds=30)


@pytest.fixture
def secret() -> str:
    return new_totp_secret()


def code_at(secret: str, at: datetime) -> str:
    return pyotp.TOTP(secret).at(at)


def test_new_secret_is_160_bit_base32() -> None:
    secret = new_totp_secret()
    assert len(secret) == 32
    assert len(base64.b32decode(secret)) == 20
    assert new_totp_secret() != secret


def test_provisioning_uri() -> None:
    uri = provisioning_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "alice")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert unquote(parts.path) == "/Flightdeck:alice"
    query = parse_qs(parts.query)
    assert query["secret"] == ["JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"]
    assert query["issuer"] == ["Flightdeck"]
    custom = provisioning_uri(
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "bob", issuer="Flightdeck Staging"
    )
    assert "Flightdeck%20Staging:bob" in custom


def test_rfc6238_vectors() -> None:
    # RFC 6238 appendix B, SHA-1 secret "12345678901234567890", last 6 of the 8 digits.
    secret = base64.b32encode(b"12345678901234567890").decode()
    at_59 = datetime.fromtimestamp(59, UTC)
    assert verify_totp(secret, "287082", last_used_counter=None, now=at_59, valid_window=0) == 1
    at_1111111109 = datetime.fromtimestamp(1111111109, UTC)
    matched = verify_totp(secret, "081804", last_used_counter=None, now=at_1111111109)
    assert matched == 1111111109 // 30


def test_current_code_returns_its_counter(secret: str) -> None:
    assert verify_totp(secret, code_at(secret, NOW), last_used_counter=None, now=NOW) == time_step(
        NOW
    )


def test_one_step_of_drift_either_way(secret: str) -> None:
    current = time_step(NOW)
    previous = verify_totp(secret, code_at(secret, NOW - STEP), last_used_counter=None, now=NOW)
    following = verify_totp(secret, code_at(secret, NOW + STEP), last_used_counter=None, now=NOW)
    assert previous == current - 1
    assert following == current + 1
    for far in (NOW - 2 * STEP, NOW + 2 * STEP):
        assert verify_totp(secret, code_at(secret, far), last_used_counter=None, now=NOW) is None


def test_valid_window_zero_accepts_only_the_current_step(secret: str) -> None:
    assert (
        verify_totp(
            secret, code_at(secret, NOW - STEP), last_used_counter=None, now=NOW, valid_window=0
        )
        is None
    )
    assert verify_totp(
        secret, code_at(secret, NOW), last_used_counter=None, now=NOW, valid_window=0
    ) == time_step(NOW)
    with pytest.raises(ValueError, match="valid_window"):
        verify_totp(secret, "123456", last_used_counter=None, now=NOW, valid_window=-1)


def test_a_code_is_accepted_once(secret: str) -> None:
    code = code_at(secret, NOW)
    counter = verify_totp(secret, code, last_used_counter=None, now=NOW)
    assert counter is not None
    assert verify_totp(secret, code, last_used_counter=counter, now=NOW) is None
    # Still refused a few seconds later, within the drift window.
    assert verify_totp(secret, code, last_used_counter=counter, now=NOW + STEP) is None


def test_an_older_code_is_refused_after_a_newer_one(secret: str) -> None:
    newer = verify_totp(secret, code_at(secret, NOW), last_used_counter=None, now=NOW)
    assert newer is not None
    older = code_at(secret, NOW - STEP)
    assert verify_totp(secret, older, last_used_counter=newer, now=NOW) is None
    # The next step's code is still fine.
    assert verify_totp(secret, code_at(secret, NOW + STEP), last_used_counter=newer, now=NOW) == (
        newer + 1
    )


def test_previous_counter_does_not_block_the_current_code(secret: str) -> None:
    current = time_step(NOW)
    assert (
        verify_totp(secret, code_at(secret, NOW), last_used_counter=current - 1, now=NOW) == current
    )


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "abcdef", "12345a", "١٢٣٤٥٦", "123-456", " ", "12 34 5"]
)
def test_malformed_codes_are_none(secret: str, code: str) -> None:
    assert verify_totp(secret, code, last_used_counter=None, now=NOW) is None


def test_non_string_code_is_none(secret: str) -> None:
    not_a_string: Any = 123456
    assert verify_totp(secret, not_a_string, last_used_counter=None, now=NOW) is None


def test_spaces_in_a_code_are_ignored(secret: str) -> None:
    code = code_at(secret, NOW)
    spaced = f" {code[:3]} {code[3:]} "
    assert verify_totp(secret, spaced, last_used_counter=None, now=NOW) == time_step(NOW)


def test_naive_and_other_timezones_mean_the_same_instant(secret: str) -> None:
    code = code_at(secret, NOW)
    naive = NOW.replace(tzinfo=None)
    paris = NOW.astimezone(timezone(timedelta(hours=1)))
    expected = time_step(NOW)
    assert verify_totp(secret, code, last_used_counter=None, now=naive) == expected
    assert verify_totp(secret, code, last_used_counter=None, now=paris) == expected


def test_defaults_to_the_current_time(secret: str) -> None:
    code = pyotp.TOTP(secret).now()
    assert verify_totp(secret, code, last_used_counter=None) is not None
