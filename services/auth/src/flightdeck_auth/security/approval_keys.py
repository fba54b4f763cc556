"""Validation of the public keys approvers register to sign approvals.

Only a single PEM ``PUBLIC KEY`` block (SubjectPublicKeyInfo) holding an RSA key of
at least 2048 bits or an Ed25519 key is accepted. Private keys are refused with a
clear message and never kept. Signatures are checked by
:func:`flightdeck_common.approval_signatures.verify_approval_signature`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from flightdeck_common.approval_signatures import (
    RSA_MAX_BITS,
    RSA_MAX_EXPONENT_BITS,
    RSA_MIN_BITS,
    verify_approval_signature,
)
from flightdeck_common.errors import FlightdeckError

__all__ = [
    "MAX_PEM_BYTES",
    "ApprovalKey",
    "InvalidApprovalKey",
    "parse_approval_key",
    "verify_approval_signature",
]

MAX_PEM_BYTES = 16 * 1024
_PUBLIC_KEY_BLOCK = re.compile(
    r"-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END PUBLIC KEY-----"
)
_SUPPORTED = "use an RSA key of at least 2048 bits or an Ed25519 key"


class InvalidApprovalKey(FlightdeckError):
    status_code = 422
    code = "invalid_approval_key"
    title = "Invalid approval key"


@dataclass(frozen=True, slots=True)
class ApprovalKey:
    """A validated approval public key, ready to store."""

    algorithm: Literal["rsa", "ed25519"]
    key_size: int
    # SHA-256 (hex) of the DER SubjectPublicKeyInfo: the same key always has the same one.
    fingerprint: str
    # Canonical PEM re-encoded from the key (what to store and show).
    pem: str


def parse_approval_key(pem: str) -> ApprovalKey:
    """Validate an uploaded approval public key; raise :class:`InvalidApprovalKey` otherwise.

    Refused, each with its own message: more than 16 KiB, private keys ("send the
    public key"), certificates, OpenSSH and PKCS#1 ``RSA PUBLIC KEY`` formats,
    anything but exactly one PEM ``PUBLIC KEY`` block, EC/DSA/Ed448/X25519 keys,
    RSA keys under 2048 or over 8192 bits or with a huge public exponent.
    """
    if not isinstance(pem, str):
        raise InvalidApprovalKey("The approval key must be PEM text.")
    if len(pem.encode("utf-8", errors="replace")) > MAX_PEM_BYTES:
        raise InvalidApprovalKey(f"The approval key is larger than {MAX_PEM_BYTES} bytes.")
    text = pem.strip()
    if "PRIVATE KEY" in text:
        raise InvalidApprovalKey(
            "This is a private key: never share it. Send the public key instead "
            "(openssl pkey -in key.pem -pubout)."
        )
    if "CERTIFICATE" in text:
        raise InvalidApprovalKey(
            "Certificates are not accepted; send the public key "
            "(openssl x509 -in cert.pem -pubkey -noout)."
        )
    if text.startswith(("ssh-", "ecdsa-")):
        raise InvalidApprovalKey(
            "OpenSSH public keys are not accepted; send a PEM public key "
            "(ssh-keygen -e -m PKCS8 -f key.pub)."
        )
    if "BEGIN RSA PUBLIC KEY" in text:
        raise InvalidApprovalKey(
            "PKCS#1 RSA public keys are not accepted; send a PEM 'PUBLIC KEY' "
            "(openssl rsa -RSAPublicKey_in -in key.pem -pubout)."
        )
    if _PUBLIC_KEY_BLOCK.fullmatch(text) is None:
        raise InvalidApprovalKey(
            "Expected exactly one PEM block starting with '-----BEGIN PUBLIC KEY-----'."
        )
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidApprovalKey("The PEM block does not contain a valid public key.") from exc

    algorithm: Literal["rsa", "ed25519"]
    if isinstance(key, ed25519.Ed25519PublicKey):
        algorithm, key_size = "ed25519", 256
    elif isinstance(key, rsa.RSAPublicKey):
        algorithm, key_size = "rsa", key.key_size
        if key_size < RSA_MIN_BITS:
            raise InvalidApprovalKey(
                f"RSA keys must have at least {RSA_MIN_BITS} bits (this one has {key_size})."
            )
        if key_size > RSA_MAX_BITS:
            raise InvalidApprovalKey(
                f"RSA keys must have at most {RSA_MAX_BITS} bits (this one has {key_size})."
            )
        if key.public_numbers().e.bit_length() > RSA_MAX_EXPONENT_BITS:
            raise InvalidApprovalKey("The RSA public exponent is too large; use 65537.")
    else:
        raise InvalidApprovalKey(f"Unsupported key type; {_SUPPORTED}.")

    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    canonical = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return ApprovalKey(
        algorithm=algorithm,
        key_size=key_size,
        fingerprint=hashlib.sha256(der).hexdigest(),
        pem=canonical,
    )
