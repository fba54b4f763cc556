"""Encryption of small secrets at rest (TOTP secrets, signing private keys).

With a key, values are sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a key
derived from the ``SECRET_KEY`` setting by HKDF-SHA256, and stored as
``v1:<token>``. Without a key (development only) they are stored as
``plain:<text>``. A box with a key refuses ``plain:`` values unless told
otherwise: accepting them would let anyone who can write to the database plant a
secret (for example a signing key) the service would then trust.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "v1:"
PLAIN_PREFIX = "plain:"
_HKDF_INFO = b"flightdeck secret box v1"


class SecretBoxError(Exception):
    """A sealed value cannot be opened: wrong key, tampered or unknown format."""


def derive_fernet_key(key: str) -> bytes:
    """The Fernet key (urlsafe base64 of 32 bytes) derived from the ``key`` setting."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        key.encode("utf-8")
    )
    return base64.urlsafe_b64encode(derived)


class SecretBox:
    """Seals and opens small text secrets; see the module docstring for the formats."""

    def __init__(self, key: str | None, *, allow_plain: bool | None = None) -> None:
        """``key`` None means development mode (no encryption).

        ``allow_plain`` controls whether ``plain:`` values open; the default is
        True without a key and False with one (set True once to re-seal values
        stored during development, see :meth:`needs_reseal`).
        """
        if key is not None and not key.strip():
            raise ValueError("SecretBox key is empty; pass None to store secrets unencrypted")
        self._fernet = Fernet(derive_fernet_key(key)) if key is not None else None
        self._allow_plain = self._fernet is None if allow_plain is None else allow_plain

    @property
    def encrypts(self) -> bool:
        """Whether :meth:`seal` encrypts (a key is configured)."""
        return self._fernet is not None

    def seal(self, plaintext: str) -> str:
        """``v1:<fernet token>`` with a key, ``plain:<plaintext>`` without one."""
        if self._fernet is None:
            return PLAIN_PREFIX + plaintext
        return SEALED_PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        """The plaintext of a value made by :meth:`seal`; :class:`SecretBoxError` if it can't."""
        if sealed.startswith(SEALED_PREFIX):
            if self._fernet is None:
                raise SecretBoxError("value is encrypted but no secret key is configured")
            try:
                token = sealed[len(SEALED_PREFIX) :].encode("ascii")
                return self._fernet.decrypt(token).decode("utf-8")
            except (InvalidToken, UnicodeError) as exc:
                raise SecretBoxError("wrong secret key or tampered value") from exc
        if sealed.startswith(PLAIN_PREFIX):
            if not self._allow_plain:
                raise SecretBoxError("unencrypted value refused: a secret key is configured")
            return sealed[len(PLAIN_PREFIX) :]
        raise SecretBoxError("unknown sealed value format")

    def needs_reseal(self, sealed: str) -> bool:
        """Whether ``sealed`` should be re-sealed (stored unencrypted while a key is set)."""
        return self._fernet is not None and sealed.startswith(PLAIN_PREFIX)
