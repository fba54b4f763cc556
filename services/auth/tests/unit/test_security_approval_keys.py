"""Registration of approval public keys: RSA >= 2048 or Ed25519, PEM PUBLIC KEY only."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519
from cryptography.x509.oid import NameOID

from flightdeck_auth.security.approval_keys import (
    MAX_PEM_BYTES,
    InvalidApprovalKey,
    parse_approval_key,
    verify_approval_signature,
)


def spki_pem(public_key: Any) -> str:
    pem: bytes = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def spki_der(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def private_pem(key: Any, fmt: serialization.PrivateFormat) -> str:
    pem: bytes = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    return pem.decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def rejection(pem: str) -> str:
    with pytest.raises(InvalidApprovalKey) as caught:
        parse_approval_key(pem)
    assert caught.value.status_code == 422
    assert caught.value.code == "invalid_approval_key"
    return str(caught.value.detail)


def test_rsa_2048_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    public = rsa_key.public_key()
    key = parse_approval_key(spki_pem(public))
    assert key.algorithm == "rsa"
    assert key.key_size == 2048
    assert key.fingerprint == hashlib.sha256(spki_der(public)).hexdigest()
    assert key.pem == spki_pem(public)


def test_ed25519_public_key(ed_key: ed25519.Ed25519PrivateKey) -> None:
    public = ed_key.public_key()
    key = parse_approval_key(spki_pem(public))
    assert key.algorithm == "ed25519"
    assert key.key_size == 256
    assert key.fingerprint == hashlib.sha256(spki_der(public)).hexdigest()
    assert len(key.fingerprint) == 64


def test_pem_is_normalized_and_fingerprint_stable(ed_key: ed25519.Ed25519PrivateKey) -> None:
    canonical = spki_pem(ed_key.public_key())
    messy = "\n\n  " + canonical.replace("\n", "\r\n") + "  \n"
    parsed = parse_approval_key(messy)
    assert parsed.pem == canonical
    assert parsed.fingerprint == parse_approval_key(canonical).fingerprint


def test_parsed_key_verifies_signatures(ed_key: ed25519.Ed25519PrivateKey) -> None:
    key = parse_approval_key(spki_pem(ed_key.public_key()))
    assert verify_approval_signature(key.pem, b"approve", ed_key.sign(b"approve"))
    assert not verify_approval_signature(key.pem, b"approve", ed_key.sign(b"reject"))


@pytest.mark.parametrize(
    "fmt",
    [
        serialization.PrivateFormat.PKCS8,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.PrivateFormat.OpenSSH,
    ],
)
def test_private_rsa_keys_are_refused(rsa_key: rsa.RSAPrivateKey, fmt: Any) -> None:
    detail = rejection(private_pem(rsa_key, fmt))
    assert "private key" in detail
    assert "public key" in detail


def test_private_ed25519_key_is_refused(ed_key: ed25519.Ed25519PrivateKey) -> None:
    detail = rejection(private_pem(ed_key, serialization.PrivateFormat.PKCS8))
    assert "Send the public key" in detail


def test_public_key_followed_by_private_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    bundle = spki_pem(rsa_key.public_key()) + private_pem(
        rsa_key, serialization.PrivateFormat.PKCS8
    )
    assert "private key" in rejection(bundle)


def test_certificate_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "approver")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    assert "Certificates are not accepted" in rejection(pem)


def test_small_rsa_key_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    assert "at least 2048 bits" in rejection(spki_pem(small.public_key()))


def test_huge_rsa_key_is_refused() -> None:
    # Built from numbers: generating a real 8200-bit key would take seconds.
    public = rsa.RSAPublicNumbers(e=65537, n=(1 << 8199) | 1).public_key()
    assert "at most 8192 bits" in rejection(spki_pem(public))


def test_rsa_key_with_huge_exponent_is_refused() -> None:
    public = rsa.RSAPublicNumbers(e=(1 << 64) + 1, n=(1 << 2047) | 1).public_key()
    assert "exponent" in rejection(spki_pem(public))


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: dsa.generate_private_key(key_size=1024),  # noqa: S505
        lambda: ed448.Ed448PrivateKey.generate(),
        lambda: x25519.X25519PrivateKey.generate(),
    ],
    ids=["ec-p256", "ec-p384", "dsa", "ed448", "x25519"],
)
def test_other_key_types_are_refused(make_key: Any) -> None:
    detail = rejection(spki_pem(make_key().public_key()))
    assert "Unsupported key type" in detail
    assert "Ed25519" in detail


def test_openssh_and_pkcs1_formats_are_refused(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    openssh = ed_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert "OpenSSH" in rejection(openssh.decode())
    pkcs1 = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    assert "PKCS#1" in rejection(pkcs1.decode())


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "   ",
        "hello",
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\nnot*base64\n-----END PUBLIC KEY-----",
    ],
)
def test_garbage_is_refused(pem: str) -> None:
    rejection(pem)


def test_two_blocks_or_surrounding_text_are_refused(ed_key: ed25519.Ed25519PrivateKey) -> None:
    pem = spki_pem(ed_key.public_key())
    other = spki_pem(ed25519.Ed25519PrivateKey.generate().public_key())
    assert "exactly one PEM block" in rejection(pem + other)
    assert "exactly one PEM block" in rejection("my key:\n" + pem)


def test_oversized_input_is_refused(ed_key: ed25519.Ed25519PrivateKey) -> None:
    pem = spki_pem(ed_key.public_key())
    padded = pem + " " * (MAX_PEM_BYTES - len(pem) + 1) + "x"
    assert str(MAX_PEM_BYTES) in rejection(padded)
    # Just under the limit, surrounding whitespace is fine.
    parse_approval_key(pem + " " * (MAX_PEM_BYTES - len(pem) - 1))


def test_non_string_is_refused() -> None:
    not_text: Any = b"-----BEGIN PUBLIC KEY-----"
    rejection(not_text)
