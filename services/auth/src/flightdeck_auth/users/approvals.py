"""The signed approval an admin account is created from, checked by auth itself.

A service token for user administration is not enough to create an ``admin``: the request
must carry the reviewer's signed decision, and auth verifies it against the reviewer's
registered approval key. The signature covers the request id, the decision, the role and
the username (``flightdeck_common.approval_signatures.approval_message``), so a holder of
admin's service token cannot turn an approval into another account or another role.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.internal.schemas import SignedApproval
from flightdeck_auth.users.models import User
from flightdeck_common.approval_signatures import approval_message, verify_approval_signature
from flightdeck_common.db import utcnow
from flightdeck_common.user_errors import InvalidSignedApproval, SignedApprovalRequired

_ISO_8601_CHARACTERS = re.compile(r"[0-9TWZtz:.,+\- ]+")


def _signed_at(value: str) -> datetime:
    moment = None
    if _ISO_8601_CHARACTERS.fullmatch(value):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value)
    if moment is None or moment.utcoffset() is None:
        raise InvalidSignedApproval("signed_at must be an ISO-8601 time with a UTC offset.")
    return moment.astimezone(UTC)


async def check_signed_approval(
    session: AsyncSession,
    approval: SignedApproval | None,
    *,
    username: str,
    role: str,
    max_age_seconds: int,
) -> User | None:
    """The approving admin when ``approval`` holds for (``username``, ``role``); None when
    there is none and ``role`` does not need one. Raises ``SignedApprovalRequired`` (403)
    for an admin without approval, ``InvalidSignedApproval`` (403) for one that fails."""
    if approval is None:
        if role == "admin":
            raise SignedApprovalRequired(
                "An admin account is created only from a signed approval (request id, "
                "decision, role, username, signed_at, signature, approver and key)."
            )
        return None
    if approval.role.value != role or approval.username != username:
        raise InvalidSignedApproval("The approval was signed for another username or role.")
    try:
        age = (utcnow() - _signed_at(approval.signed_at)).total_seconds()
    except (OverflowError, ValueError) as exc:
        raise InvalidSignedApproval("signed_at is out of range.") from exc
    if not -60 <= age <= max_age_seconds:
        raise InvalidSignedApproval(
            f"The approval was signed {age:.0f} s ago; at most {max_age_seconds} s are accepted."
        )
    approver = await session.get(User, approval.approver_id)
    if approver is None or not approver.is_active or approver.role != "admin":
        raise InvalidSignedApproval("The approver is not an active admin.")
    if (
        approver.approval_key_pem is None
        or approver.approval_key_fingerprint != approval.key_fingerprint
    ):
        raise InvalidSignedApproval("The approver's registered approval key is another one.")
    try:
        signature = base64.b64decode(approval.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignedApproval("signature must be standard base64.") from exc
    message = approval_message(
        approval.request_id, approval.decision, role, username, approval.signed_at
    )
    if not verify_approval_signature(approver.approval_key_pem, message, signature):
        raise InvalidSignedApproval("The signature does not verify with the approver's key.")
    return approver
