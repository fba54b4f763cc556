"""Shapes of the internal API (service tokens only)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from flightdeck_common.auth.claims import Role


class SignedApproval(BaseModel):
    """The signed review decision a user is created from (admin's registration request)."""

    request_id: int = Field(ge=1, le=2**63 - 1)
    decision: Literal["approve"] = "approve"
    role: Role
    username: str = Field(min_length=1, max_length=80)
    signed_at: str = Field(min_length=1, max_length=64)
    signature: str = Field(
        min_length=1, max_length=4096, description="Base64 signature as the reviewer sent it."
    )
    approver_id: int = Field(ge=1, le=2**63 - 1, description="User id of the approving admin.")
    key_fingerprint: str = Field(
        min_length=64, max_length=64, description="SHA-256 of the approver's public key."
    )


class InternalUserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password_hash: str = Field(min_length=1, max_length=255, description="argon2id hash")
    role: Role = Role.VIEWER
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Retrying with the same key returns the user created the first time.",
    )
    actor: str = Field("service", max_length=200, description="Who asked (for the audit log).")
    approval: SignedApproval | None = Field(
        None,
        description=(
            'Required for role "admin": the approval, signed over '
            '"{request_id}:approve:{role}:{username}:{signed_at}" by an active admin\'s '
            "registered approval key."
        ),
    )


class InternalUserUpdate(BaseModel):
    role: Role | None = None
    is_active: bool | None = None
    actor: str = Field("service", max_length=200)


class RevocationRead(BaseModel):
    id: int
    jti: str | None
    subject: str | None
    revoked_at: datetime
    expires_at: datetime


class RevocationFeed(BaseModel):
    items: list[RevocationRead]
    next_cursor: int | None = Field(None, description="Pass as `after`; null when caught up.")
