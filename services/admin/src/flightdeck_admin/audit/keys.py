"""The two keys that anchor the audit chain outside admin's database.

The chain key keys every row's hash (HMAC-SHA256), so whoever can write the database but
does not hold the key cannot re-hash a rewritten chain. The signing key (Ed25519) signs
the chain head that admin publishes (``GET /admin/audit-events/head`` and a log line),
so a rewrite is detected against a head published earlier.

Production requires both (settings validation). Development derives fixed keys from
public constants, the same in every process, so a development chain verifies across
restarts and replicas but is not protected.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

logger = logging.getLogger(__name__)

_DEVELOPMENT_CHAIN_KEY_SEED = b"flightdeck-development-audit-chain-key"
_DEVELOPMENT_SIGNING_KEY_SEED = b"flightdeck-development-audit-head-signing-key"


class AnchorSettings(Protocol):
    @property
    def audit_chain_key(self) -> SecretStr | None: ...
    @property
    def audit_signing_key(self) -> SecretStr | None: ...


def _load_signing_key(value: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PKCS#8 PEM, or from its 32-byte seed written on one
    line (hex, or base64 / base64url with or without padding) so it fits an env file."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("is not an Ed25519 private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_seed(text))


def _seed(text: str) -> bytes:
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise ValueError("is neither a PEM nor a 32-byte seed in hex or base64") from exc
    if len(raw) != 32:
        raise ValueError(f"a seed must be 32 bytes, this one is {len(raw)}")
    return raw


def signing_key_problem(value: SecretStr | None) -> str | None:
    """Why ``value`` cannot sign the chain head in production (None when it can)."""
    if value is None or not value.get_secret_value().strip():
        return (
            "is required (an Ed25519 private key: PKCS#8 PEM, or its 32-byte seed in hex or base64)"
        )
    try:
        _load_signing_key(value.get_secret_value())
    except (ValueError, TypeError) as exc:
        return f"is not a usable Ed25519 private key ({exc})"
    return None


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class ChainKeys:
    """The chain key (bytes) and the head signing key, ready to use."""

    chain_key: bytes
    signing_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    @property
    def public_key_pem(self) -> str:
        return public_key_pem(self.public_key)

    def sign(self, message: str) -> str:
        """Base64 of the Ed25519 signature of ``message`` (UTF-8)."""
        return base64.b64encode(self.signing_key.sign(message.encode())).decode()

    def signature_is_valid(self, message: str, signature: str) -> bool:
        try:
            raw = base64.b64decode(signature, validate=True)
            self.public_key.verify(raw, message.encode())
        except (ValueError, InvalidSignature):
            return False
        return True


def development_keys() -> ChainKeys:
    """The fixed, publicly known development keys."""
    return ChainKeys(
        chain_key=hashlib.sha256(_DEVELOPMENT_CHAIN_KEY_SEED).digest(),
        signing_key=Ed25519PrivateKey.from_private_bytes(
            hashlib.sha256(_DEVELOPMENT_SIGNING_KEY_SEED).digest()
        ),
    )


def chain_keys(settings: AnchorSettings) -> ChainKeys:
    """The keys from settings; development fills what is unset with :func:`development_keys`
    (production settings never lack them: validation refuses to start)."""
    fallback = development_keys()
    chain_key = fallback.chain_key
    if settings.audit_chain_key is not None and settings.audit_chain_key.get_secret_value():
        chain_key = settings.audit_chain_key.get_secret_value().encode()
    else:
        logger.warning("FLIGHTDECK_ADMIN_AUDIT_CHAIN_KEY is unset: using the development key")
    signing_key = fallback.signing_key
    if settings.audit_signing_key is not None and settings.audit_signing_key.get_secret_value():
        signing_key = _load_signing_key(settings.audit_signing_key.get_secret_value())
    else:
        logger.warning("FLIGHTDECK_ADMIN_AUDIT_SIGNING_KEY is unset: using the development key")
    return ChainKeys(chain_key=chain_key, signing_key=signing_key)
