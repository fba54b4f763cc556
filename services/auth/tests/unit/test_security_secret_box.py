"""Secrets at rest: AES-256-GCM under HKDF-derived keys (a list: the first seals, all
open), each value bound to its row; legacy Fernet values still open; plain text in
development."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from flightdeck_auth.security.secret_box import (
    SecretBox,
    SecretBoxError,
    box_key_id,
    derive_fernet_key,
)

KEY = "k" * 16 + "an-application-secret-key-0123456789"
NEW_KEY = "a-newer-application-secret-key-of-48-characters"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ROW = "users.totp_secret:7"


def _legacy_v1(key: str, plaintext: str) -> str:
    """A value as the box sealed it before rows were bound (Fernet, ``v1:``)."""
    return "v1:" + Fernet(derive_fernet_key(key)).encrypt(plaintext.encode()).decode()


def test_seal_with_key_encrypts() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(SECRET, bound_to=ROW)
    assert box.encrypts
    assert sealed.startswith(f"v2:{box_key_id(KEY)}:")
    assert SECRET not in sealed
    assert box.seal(SECRET, bound_to=ROW) != sealed  # random nonce
    assert box.open(sealed, bound_to=ROW) == SECRET


def test_another_instance_with_the_same_key_opens() -> None:
    assert SecretBox(KEY).open(SecretBox(KEY).seal(SECRET, bound_to=ROW), bound_to=ROW) == SECRET


def test_multiline_and_unicode_round_trip() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI...\n-----END PRIVATE KEY-----\n"
    box = SecretBox(KEY)
    for value in (pem, "clé-secrète-🔑", ""):
        assert box.open(box.seal(value, bound_to=ROW), bound_to=ROW) == value


def test_a_value_copied_to_another_row_does_not_open() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(SECRET, bound_to="users.totp_secret:7")
    for other in ("users.totp_secret:8", "users.totp_secret:70", "signing_keys.private_key:7"):
        with pytest.raises(SecretBoxError, match="another row"):
            box.open(sealed, bound_to=other)


def test_rotated_keys_old_values_open_new_ones_use_the_first_key() -> None:
    old_box = SecretBox(KEY)
    old_value = old_box.seal(SECRET, bound_to=ROW)
    rotated = SecretBox([NEW_KEY, KEY])
    assert rotated.open(old_value, bound_to=ROW) == SECRET
    assert rotated.needs_reseal(old_value)
    fresh = rotated.seal(SECRET, bound_to=ROW)
    assert fresh.startswith(f"v2:{box_key_id(NEW_KEY)}:")
    assert not rotated.needs_reseal(fresh)
    assert SecretBox(NEW_KEY).open(fresh, bound_to=ROW) == SECRET
    # Once the old key is dropped, what it alone sealed no longer opens.
    with pytest.raises(SecretBoxError, match="not configured"):
        SecretBox(NEW_KEY).open(old_value, bound_to=ROW)


def test_legacy_unbound_values_open_under_any_configured_key_and_need_a_reseal() -> None:
    legacy = _legacy_v1(KEY, SECRET)
    assert SecretBox(KEY).open(legacy, bound_to=ROW) == SECRET
    assert SecretBox([NEW_KEY, KEY]).open(legacy, bound_to=ROW) == SECRET
    assert SecretBox(KEY).needs_reseal(legacy)
    with pytest.raises(SecretBoxError, match="wrong secret key or tampered"):
        SecretBox(NEW_KEY).open(legacy, bound_to=ROW)


def test_wrong_key_raises() -> None:
    sealed = SecretBox(KEY).seal(SECRET, bound_to=ROW)
    with pytest.raises(SecretBoxError):
        SecretBox(KEY + "x").open(sealed, bound_to=ROW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s[:-4] + ("AAAA" if not s.endswith("AAAA") else "BBBB"),
        lambda s: s[:20] + ("x" if s[20] != "x" else "y") + s[21:],
        lambda s: s + "AAAA",
        lambda s: s.rsplit(":", 1)[0] + ":not base64 at all!",
        lambda s: s.rsplit(":", 1)[0] + ":",
        lambda s: "v2:",
        lambda s: "v2:nokeyid",
        lambda s: "v1:" + "not base64 at all!",
        lambda s: "v1:é",
    ],
)
def test_tampered_value_raises(tamper: object) -> None:
    box = SecretBox(KEY)
    sealed = box.seal(SECRET, bound_to=ROW)
    assert callable(tamper)
    with pytest.raises(SecretBoxError):
        box.open(tamper(sealed), bound_to=ROW)


def test_without_key_values_are_plain() -> None:
    for box in (SecretBox(None), SecretBox([])):
        sealed = box.seal(SECRET, bound_to=ROW)
        assert not box.encrypts
        assert sealed == "plain:" + SECRET
        assert box.open(sealed, bound_to=ROW) == SECRET
        assert box.open("plain:with:colons", bound_to=ROW) == "with:colons"


def test_keyless_box_cannot_open_encrypted_values() -> None:
    for sealed in (SecretBox(KEY).seal(SECRET, bound_to=ROW), _legacy_v1(KEY, SECRET)):
        with pytest.raises(SecretBoxError, match="no secret key"):
            SecretBox(None).open(sealed, bound_to=ROW)


def test_box_with_key_refuses_plain_values_unless_allowed() -> None:
    plain = SecretBox(None).seal(SECRET, bound_to=ROW)
    with pytest.raises(SecretBoxError, match="unencrypted"):
        SecretBox(KEY).open(plain, bound_to=ROW)
    migrating = SecretBox(KEY, allow_plain=True)
    assert migrating.open(plain, bound_to=ROW) == SECRET
    assert migrating.needs_reseal(plain)
    resealed = migrating.seal(migrating.open(plain, bound_to=ROW), bound_to=ROW)
    assert not migrating.needs_reseal(resealed)
    assert not SecretBox(None).needs_reseal(plain)


@pytest.mark.parametrize("value", ["", "JBSWY3DP", "v3:abc", "PLAIN:x"])
def test_unknown_format_raises(value: str) -> None:
    with pytest.raises(SecretBoxError, match="unknown"):
        SecretBox(KEY).open(value, bound_to=ROW)
    with pytest.raises(SecretBoxError, match="unknown"):
        SecretBox(None).open(value, bound_to=ROW)


@pytest.mark.parametrize("keys", ["", "   ", [KEY, ""]])
def test_empty_key_is_refused(keys: str | list[str]) -> None:
    with pytest.raises(ValueError, match="empty"):
        SecretBox(keys)


def test_key_derivation_is_deterministic_and_key_specific() -> None:
    assert derive_fernet_key(KEY) == derive_fernet_key(KEY)
    assert derive_fernet_key(KEY) != derive_fernet_key(KEY + "x")
    assert len(derive_fernet_key(KEY)) == 44  # urlsafe base64 of 32 bytes
    assert box_key_id(KEY) == box_key_id(KEY) != box_key_id(NEW_KEY)
    assert KEY[:4] not in box_key_id(KEY)
