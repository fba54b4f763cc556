"""Encryption of small secrets at rest (TOTP secrets, signing private keys).

A box holds a list of keys (the ``SECRET_KEY`` setting first, then
``PREVIOUS_SECRET_KEYS``): the first seals, every one opens, so keys rotate without
a flag day. Values are sealed with AES-256-GCM under a key derived from the setting by
HKDF-SHA256, and stored as ``v2:<key id>:<base64url(nonce || ciphertext)>``. The
associated data is the row the value belongs to (``bound_to``, e.g.
``signing_keys.private_key:<kid>``): a ciphertext copied into another row does not open.

Older formats still open, and :meth:`SecretBox.needs_reseal` says they should be
re-sealed (``flightdeck_auth.security.reseal`` does it at startup and on
``rotate-keys``):

- ``v1:<fernet token>`` (Fernet under the HKDF-derived key, not bound to a row);
- ``plain:<text>``, stored without a key (development only). A box with a key refuses
  ``plain:`` values unless told otherwise: accepting them would let anyone who can write
  to the database plant a secret (for example a signing key) the service would then trust.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "v2:"
LEGACY_PREFIX = "v1:"
PLAIN_PREFIX = "plain:"
_HKDF_INFO = b"flightdeck secret box v1"
_HKDF_INFO_AES = b"flightdeck secret box v2 aes-256-gcm"
_HKDF_INFO_KEY_ID = b"flightdeck secret box v2 key id"
_NONCE_BYTES = 12

# What a sealed value is bound to: "<table>.<column>:<row id>".
TOTP_SECRET_COLUMN = "users.totp_secret"  # noqa: S105 (a column name)
SIGNING_KEY_COLUMN = "signing_keys.private_key"


def row_binding(column: str, row_id: object) -> str:
    """The ``bound_to`` of the value in ``column`` of the row ``row_id``."""
    return f"{column}:{row_id}"


class SecretBoxError(Exception):
    """A sealed value cannot be opened: wrong key, tampered, another row's or unknown format."""


def _hkdf(key: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        key.encode("utf-8")
    )


def derive_fernet_key(key: str) -> bytes:
    """The Fernet key (urlsafe base64 of 32 bytes) of ``v1:`` values, derived from ``key``."""
    return base64.urlsafe_b64encode(_hkdf(key, _HKDF_INFO))


def box_key_id(key: str) -> str:
    """A short public name of ``key`` (stored in each value it seals; reveals nothing of it)."""
    return base64.urlsafe_b64encode(_hkdf(key, _HKDF_INFO_KEY_ID)[:6]).decode("ascii")


@dataclass(frozen=True)
class _BoxKey:
    key_id: str
    aead: AESGCM
    fernet: Fernet


def _box_key(key: str) -> _BoxKey:
    if not key.strip():
        raise ValueError("SecretBox key is empty; pass None to store secrets unencrypted")
    return _BoxKey(
        box_key_id(key), AESGCM(_hkdf(key, _HKDF_INFO_AES)), Fernet(derive_fernet_key(key))
    )


def _associated_data(bound_to: str) -> bytes:
    return b"flightdeck secret box v2|" + bound_to.encode("utf-8")


class SecretBox:
    """Seals and opens small text secrets; see the module docstring for the formats."""

    def __init__(
        self, keys: str | Sequence[str] | None, *, allow_plain: bool | None = None
    ) -> None:
        """``keys``: one key, or a list whose first key seals and all open; None (or an
        empty list) means development mode (no encryption).

        ``allow_plain`` controls whether ``plain:`` values open; the default is
        True without a key and False with one (set True once to re-seal values
        stored during development, see :meth:`needs_reseal`).
        """
        listed = [keys] if isinstance(keys, str) else list(keys or [])
        self._keys = [_box_key(key) for key in listed]
        self._by_id = {key.key_id: key for key in reversed(self._keys)}
        self._allow_plain = not self._keys if allow_plain is None else allow_plain

    @property
    def encrypts(self) -> bool:
        """Whether :meth:`seal` encrypts (a key is configured)."""
        return bool(self._keys)

    def seal(self, plaintext: str, *, bound_to: str) -> str:
        """``v2:<key id>:<sealed>`` under the first key, bound to the row ``bound_to``;
        ``plain:<plaintext>`` without a key."""
        if not self._keys:
            return PLAIN_PREFIX + plaintext
        key = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = key.aead.encrypt(nonce, plaintext.encode("utf-8"), _associated_data(bound_to))
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{SEALED_PREFIX}{key.key_id}:{body}"

    def open(self, sealed: str, *, bound_to: str) -> str:
        """The plaintext of a value :meth:`seal` made for ``bound_to``; :class:`SecretBoxError`
        if it can't (wrong key, tampered, sealed for another row, unknown format)."""
        if sealed.startswith(SEALED_PREFIX):
            return self._open_v2(sealed[len(SEALED_PREFIX) :], bound_to)
        if sealed.startswith(LEGACY_PREFIX):
            return self._open_v1(sealed[len(LEGACY_PREFIX) :])
        if sealed.startswith(PLAIN_PREFIX):
            if not self._allow_plain:
                raise SecretBoxError("unencrypted value refused: a secret key is configured")
            return sealed[len(PLAIN_PREFIX) :]
        raise SecretBoxError("unknown sealed value format")

    def _open_v2(self, value: str, bound_to: str) -> str:
        if not self._keys:
            raise SecretBoxError("value is encrypted but no secret key is configured")
        key_id, separator, body = value.partition(":")
        if not separator:
            raise SecretBoxError("unknown sealed value format")
        key = self._by_id.get(key_id)
        if key is None:
            raise SecretBoxError("sealed with a key that is not configured (secret key rotated?)")
        try:
            raw = base64.urlsafe_b64decode(body.encode("ascii"))
            if len(raw) <= _NONCE_BYTES:
                raise SecretBoxError("wrong secret key or tampered value")
            plain = key.aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _associated_data(bound_to)
            )
            return plain.decode("utf-8")
        except (InvalidTag, UnicodeError, binascii.Error, ValueError) as exc:
            raise SecretBoxError(
                "wrong secret key, tampered value or a value of another row"
            ) from exc

    def _open_v1(self, value: str) -> str:
        if not self._keys:
            raise SecretBoxError("value is encrypted but no secret key is configured")
        try:
            token = value.encode("ascii")
        except UnicodeError as exc:
            raise SecretBoxError("wrong secret key or tampered value") from exc
        for key in self._keys:
            try:
                return key.fernet.decrypt(token).decode("utf-8")
            except (InvalidToken, UnicodeError):
                continue
        raise SecretBoxError("wrong secret key or tampered value")

    def needs_reseal(self, sealed: str) -> bool:
        """Whether ``sealed`` should be re-sealed: stored unencrypted or unbound (``v1:``)
        while a key is set, or sealed under a key other than the first."""
        if not self._keys:
            return False
        if sealed.startswith(SEALED_PREFIX):
            key_id = sealed[len(SEALED_PREFIX) :].partition(":")[0]
            return key_id != self._keys[0].key_id
        return True
