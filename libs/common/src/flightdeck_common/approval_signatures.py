"""Verification of approval signatures made with a user's registered public key.

Approvers register an RSA (>= 2048 bits) or Ed25519 public key with the auth
service; the admin service checks signed approvals against it. RSA signatures are
PKCS#1 v1.5 with SHA-256 (``openssl dgst -sha256 -sign``), Ed25519 signatures are
the raw 64 bytes (``openssl pkeyutl -sign -rawin``).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
# Public exponents above 32 bits make verification arbitrarily slow (and nobody uses them).
RSA_MAX_EXPONENT_BITS = 32
ED25519_SIGNATURE_BYTES = 64

ApprovalPublicKey: TypeAlias = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
Decision = Literal["approve", "reject"]


def approval_message(
    request_id: int, decision: Decision, role: str | None, username: str, signed_at: str
) -> bytes:
    """The exact bytes a reviewer signs for a registration decision, in UTF-8:
    ``"{id}:{decision}:{role}:{username}:{signed_at}"``. A rejection gives no role, so
    its role field is empty (``"18:reject::alice:2026-11-25T10:16:30+00:00"``).

    Admin checks it before deciding; auth checks it again before creating an admin from
    the approval, so the role and the username are covered by the reviewer's key.
    """
    return f"{request_id}:{decision}:{role or ''}:{username}:{signed_at}".encode()


def load_approval_public_key(pem: str | bytes) -> ApprovalPublicKey | None:
    """Load a PEM ``PUBLIC KEY`` usable for approvals, or None when it is not one.

    Only RSA keys of 2048 to 8192 bits with a small public exponent and Ed25519
    keys qualify; anything else (other key types, private keys, garbage) is None.
    """
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, rsa.RSAPublicKey):
        exponent = key.public_numbers().e
        if (
            RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS
            and exponent.bit_length() <= RSA_MAX_EXPONENT_BITS
        ):
            return key
    return None


def verify_approval_signature(pem: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``message`` was made by the key in ``pem``.

    RSA: PKCS#1 v1.5 with SHA-256. Ed25519: pure Ed25519 over the message. Any
    problem (unsupported or malformed key, wrong signature length, mismatch)
    returns False; this function never raises on bad input.
    """
    if not isinstance(message, bytes | bytearray) or not isinstance(signature, bytes | bytearray):
        return False
    key = load_approval_public_key(pem)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if len(signature) != ED25519_SIGNATURE_BYTES:
                return False
            key.verify(bytes(signature), bytes(message))
            return True
        if isinstance(key, rsa.RSAPublicKey):
            if len(signature) != (key.key_size + 7) // 8:
                return False
            key.verify(bytes(signature), bytes(message), padding.PKCS1v15(), hashes.SHA256())
            return True
    except (InvalidSignature, ValueError, TypeError):
        return False
    return False
