"""Secrets at rest: Fernet under an HKDF-derived key, or plain text in development."""

from __future__ import annotations

import pytest

from flightdeck_auth.security.secret_box import (
    SecretBox,
    SecretBoxError,
    derive_fernet_key,
)

KEY = "k" * 16 + "an-application-secret-key-0123456789"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_seal_with_key_encrypts() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(SECRET)
    assert box.encrypts
    assert sealed.startswith("v1:")
    assert SECRET not in sealed
    assert box.seal(SECRET) != sealed  # random IV
    assert box.open(sealed) == SECRET


def test_another_instance_with_the_same_key_opens() -> None:
    assert SecretBox(KEY).open(SecretBox(KEY).seal(SECRET)) == SECRET


def test_multiline_and_unicode_round_trip() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI...\n-----END PRIVATE KEY-----\n"
    box = SecretBox(KEY)
    assert box.open(box.seal(pem)) == pem
    assert box.open(box.seal("clé-secrète-🔑")) == "clé-secrète-🔑"
    assert box.open(box.seal("")) == ""


def test_wrong_key_raises() -> None:
    sealed = SecretBox(KEY).seal(SECRET)
    with pytest.raises(SecretBoxError, match="wrong secret key or tampered"):
        SecretBox(KEY + "x").open(sealed)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s[:-4] + ("AAAA" if not s.endswith("AAAA") else "BBBB"),
        lambda s: s[:20] + ("x" if s[20] != "x" else "y") + s[21:],
        lambda s: s + "AAAA",
        lambda s: "v1:" + "not base64 at all!",
        lambda s: "v1:",
    ],
)
def test_tampered_value_raises(tamper: object) -> None:
    box = SecretBox(KEY)
    sealed = box.seal(SECRET)
    assert callable(tamper)
    with pytest.raises(SecretBoxError):
        box.open(tamper(sealed))


def test_without_key_values_are_plain() -> None:
    box = SecretBox(None)
    sealed = box.seal(SECRET)
    assert not box.encrypts
    assert sealed == "plain:" + SECRET
    assert box.open(sealed) == SECRET
    assert box.open("plain:with:colons") == "with:colons"


def test_keyless_box_cannot_open_encrypted_values() -> None:
    sealed = SecretBox(KEY).seal(SECRET)
    with pytest.raises(SecretBoxError, match="no secret key"):
        SecretBox(None).open(sealed)


def test_box_with_key_refuses_plain_values_unless_allowed() -> None:
    plain = SecretBox(None).seal(SECRET)
    with pytest.raises(SecretBoxError, match="unencrypted"):
        SecretBox(KEY).open(plain)
    migrating = SecretBox(KEY, allow_plain=True)
    assert migrating.open(plain) == SECRET
    assert migrating.needs_reseal(plain)
    resealed = migrating.seal(migrating.open(plain))
    assert not migrating.needs_reseal(resealed)
    assert not SecretBox(None).needs_reseal(plain)


@pytest.mark.parametrize("value", ["", "JBSWY3DP", "v2:abc", "PLAIN:x"])
def test_unknown_format_raises(value: str) -> None:
    with pytest.raises(SecretBoxError, match="unknown"):
        SecretBox(KEY).open(value)
    with pytest.raises(SecretBoxError, match="unknown"):
        SecretBox(None).open(value)


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        SecretBox(key)


def test_key_derivation_is_deterministic_and_key_specific() -> None:
    assert derive_fernet_key(KEY) == derive_fernet_key(KEY)
    assert derive_fernet_key(KEY) != derive_fernet_key(KEY + "x")
    assert len(derive_fernet_key(KEY)) == 44  # urlsafe base64 of 32 bytes
