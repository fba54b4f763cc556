"""A user's TOTP secret in the secret box, bound to the user's row: a sealed secret
copied to another user does not open, and that user's codes are then refused."""

from __future__ import annotations

import logging

from flightdeck_auth.exceptions import InvalidMfaCode
from flightdeck_auth.security.secret_box import (
    TOTP_SECRET_COLUMN,
    SecretBox,
    SecretBoxError,
    row_binding,
)

logger = logging.getLogger(__name__)


def seal_totp_secret(box: SecretBox, user_id: int, secret: str) -> str:
    return box.seal(secret, bound_to=row_binding(TOTP_SECRET_COLUMN, user_id))


def open_totp_secret(box: SecretBox, user_id: int, sealed: str) -> str:
    """The user's TOTP secret; :class:`InvalidMfaCode` (no code can match) when the stored
    value does not open for this user (another row's, a dropped secret key, tampered)."""
    try:
        return box.open(sealed, bound_to=row_binding(TOTP_SECRET_COLUMN, user_id))
    except SecretBoxError as exc:
        logger.error("the TOTP secret of user %s does not open: %s", user_id, exc)
        raise InvalidMfaCode() from None
