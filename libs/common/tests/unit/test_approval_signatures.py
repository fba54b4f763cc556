"""Approval signatures: RSA PKCS#1 v1.5 SHA-256 and Ed25519, False (never raise) otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from flightdeck_common.approval_signatures import (
    load_approval_public_key,
    verify_approval_signature,
)

MESSAGE = b'{"approval":"deploy","pipeline":"web","run":42}'


def public_pem(key: Any) -> str:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes = MESSAGE) -> bytes:
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def test_rsa_signature_verifies(rsa_key: rsa.RSAPrivateKey) -> None:
    assert verify_approval_signature(public_pem(rsa_key), MESSAGE, rsa_sign(rsa_key)) is True


def test_ed25519_signature_verifies(ed_key: ed25519.Ed25519PrivateKey) -> None:
    assert verify_approval_signature(public_pem(ed_key), MESSAGE, ed_key.sign(MESSAGE)) is True


def test_other_message_or_key_fails(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    other_ed = ed25519.Ed25519PrivateKey.generate()
    assert not verify_approval_signature(public_pem(rsa_key), MESSAGE + b" ", rsa_sign(rsa_key))
    assert not verify_approval_signature(public_pem(ed_key), MESSAGE + b" ", ed_key.sign(MESSAGE))
    assert not verify_approval_signature(public_pem(other_ed), MESSAGE, ed_key.sign(MESSAGE))
    # A signature made by one algorithm checked against the other kind of key.
    assert not verify_approval_signature(public_pem(rsa_key), MESSAGE, ed_key.sign(MESSAGE))
    assert not verify_approval_signature(public_pem(ed_key), MESSAGE, rsa_sign(rsa_key))


def test_tampered_or_truncated_signature_fails(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    rsa_signature = bytearray(rsa_sign(rsa_key))
    rsa_signature[10] ^= 0x01
    assert not verify_approval_signature(public_pem(rsa_key), MESSAGE, bytes(rsa_signature))
    ed_signature = ed_key.sign(MESSAGE)
    assert not verify_approval_signature(public_pem(ed_key), MESSAGE, ed_signature[:-1])
    assert not verify_approval_signature(public_pem(ed_key), MESSAGE, ed_signature + b"\x00")
    assert not verify_approval_signature(public_pem(rsa_key), MESSAGE, b"")


def test_rsa_pss_signature_is_not_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    pss = rsa_key.sign(
        MESSAGE,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
        hashes.SHA256(),
    )
    assert not verify_approval_signature(public_pem(rsa_key), MESSAGE, pss)


def test_weak_or_unsupported_keys_never_verify() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    assert not verify_approval_signature(public_pem(small), MESSAGE, rsa_sign(small))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_signature = ec_key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    assert not verify_approval_signature(public_pem(ec_key), MESSAGE, ec_signature)


@pytest.mark.parametrize(
    "pem",
    ["", "garbage", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "\x00" * 10],
)
def test_malformed_key_is_false_not_an_error(pem: str, ed_key: ed25519.Ed25519PrivateKey) -> None:
    assert verify_approval_signature(pem, MESSAGE, ed_key.sign(MESSAGE)) is False
    assert load_approval_public_key(pem) is None


def test_private_key_pem_is_not_a_public_key(ed_key: ed25519.Ed25519PrivateKey) -> None:
    private_pem = ed_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert verify_approval_signature(private_pem, MESSAGE, ed_key.sign(MESSAGE)) is False


def test_non_bytes_inputs_are_false(ed_key: ed25519.Ed25519PrivateKey) -> None:
    text_message: Any = MESSAGE.decode()
    assert (
        verify_approval_signature(public_pem(ed_key), text_message, ed_key.sign(MESSAGE)) is False
    )
    text_signature: Any = "00" * 64
    assert verify_approval_signature(public_pem(ed_key), MESSAGE, text_signature) is False


def test_load_accepts_str_and_bytes(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    assert isinstance(load_approval_public_key(pem), rsa.RSAPublicKey)
    assert isinstance(load_approval_public_key(pem.encode()), rsa.RSAPublicKey)


def test_rsa_with_huge_public_exponent_is_refused() -> None:
    # Valid-looking numbers (never used to sign): verifying with e ~ 2**64 would be slow.
    modulus = (1 << 2047) | 1
    key = rsa.RSAPublicNumbers(e=(1 << 64) + 1, n=modulus).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert load_approval_public_key(pem) is None
    assert verify_approval_signature(pem, MESSAGE, b"\x01" * 256) is False
