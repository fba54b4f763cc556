"""API shapes of registration requests and review decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi.openapi.models import Example
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from flightdeck_admin.registrations.models import RequestStatus
from flightdeck_common.auth.claims import Role


def _storable_text(value: str) -> str:
    # JSON may carry lone surrogates and NUL, which UTF-8 and PostgreSQL text refuse.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


StorableText = Annotated[str, AfterValidator(_storable_text)]


class RegistrationCreate(BaseModel):
    username: StorableText = Field(
        min_length=1,
        max_length=256,
        description="3 to 80 characters a-z, 0-9, '.', '_', '-' once normalized (casefolded).",
        examples=["alice"],
    )
    password: StorableText = Field(
        min_length=1,
        max_length=1024,
        description="12 to 256 characters, not a common password, not containing the username.",
    )
    reason: StorableText = Field("", max_length=1000, description="Why access is needed.")


class RegistrationRequestFiled(BaseModel):
    """What the requester sees: the request is waiting for an admin's review."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    reason: str
    status: RequestStatus
    created_at: datetime


class RegistrationRequestRead(BaseModel):
    """A registration request as admins see it, with its decision once there is one."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    reason: str
    status: RequestStatus
    ip: str | None
    created_at: datetime
    updated_at: datetime
    decided_at: datetime | None
    decided_by: str | None = Field(description="Username of the reviewing admin.")
    decided_by_id: str | None
    decision_note: str | None
    role: Role | None = Field(description="Role given on approval.")
    signed_at: str | None = Field(description="signed_at exactly as the reviewer signed it.")
    signature: str | None = Field(
        None, description="The decision's signature (base64) exactly as the reviewer sent it."
    )
    signature_sha256: str | None
    key_fingerprint: str | None = Field(description="SHA-256 of the reviewer's public key.")
    public_key_pem: str | None = Field(
        None, description="The reviewer's public key the signature verified with (PEM)."
    )
    user_id: int | None = Field(description="The account created at auth on approval.")


class ReviewDecision(BaseModel):
    note: StorableText | None = Field(None, max_length=1000)
    signed_at: str = Field(
        min_length=1,
        max_length=64,
        description=(
            "ISO-8601 time with a UTC offset, within 5 minutes of the server's clock; "
            "signed exactly as sent."
        ),
        examples=["2026-11-25T10:15:00+00:00"],
    )
    signature: str = Field(
        min_length=1,
        max_length=4096,
        description=(
            'Base64 signature over "{id}:{approve|reject}:{role}:{username}:{signed_at}" '
            "(role empty for a rejection) with your registered approval key (RSA PKCS#1 v1.5 "
            "SHA-256, or Ed25519)."
        ),
    )


class ApprovalDecision(ReviewDecision):
    role: Role = Field(Role.VIEWER, description="Role of the new account.")


REGISTRATION_EXAMPLES: dict[str, Example] = {
    "request": {
        "summary": "Ask for an account",
        "value": {
            "username": "alice",
            "password": "correct horse battery staple",
            "reason": "On-call for the checkout team from December.",
        },
    }
}
_SIGNATURE_EXAMPLE = (
    "0P/c+fFF1k2qwNpYIaVRdJx6riPbITEoE8eKCZFTBEzLGz8mGxakl8V7bTOT4daMGSAVxM9+7hlHWwWD/0MaOA=="
)
APPROVAL_EXAMPLES: dict[str, Example] = {
    "approve": {
        "summary": "Approve request 17 as an operator",
        "description": (
            'The signature covers "17:approve:operator:alice:2026-11-25T10:15:00+00:00" '
            "(request id, decision, role, username, signed_at exactly as sent)."
        ),
        "value": {
            "role": "operator",
            "note": "Checkout team, confirmed with their lead.",
            "signed_at": "2026-11-25T10:15:00+00:00",
            "signature": _SIGNATURE_EXAMPLE,
        },
    }
}
REJECTION_EXAMPLES: dict[str, Example] = {
    "reject": {
        "summary": "Reject request 18",
        "description": (
            'The signature covers "18:reject::mallory:2026-11-25T10:16:30+00:00" '
            "(no role for a rejection)."
        ),
        "value": {
            "note": "Unknown requester.",
            "signed_at": "2026-11-25T10:16:30+00:00",
            "signature": _SIGNATURE_EXAMPLE,
        },
    }
}
