"""API shapes of users."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from flightdeck_auth.security.step_up import StepUp
from flightdeck_auth.users.models import User
from flightdeck_common.auth.claims import Role


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    is_active: bool
    mfa_enabled: bool
    has_approval_key: bool = False
    approval_key_fingerprint: str | None = None
    created_at: datetime
    last_login_at: datetime | None = None


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class ApprovalKeyUpdate(StepUp):
    """The new key, with the current password and a TOTP code (a session alone is not enough)."""

    public_key_pem: str = Field(
        min_length=1,
        max_length=16384,
        description="RSA (at least 2048 bits) or Ed25519 public key, PEM (BEGIN PUBLIC KEY).",
    )


class ApprovalKeyRead(BaseModel):
    user_id: int
    algorithm: str
    fingerprint: str
    public_key_pem: str
    updated_at: datetime


def user_read(user: User) -> UserRead:
    return UserRead(
        id=user.id,
        username=user.username,
        role=Role(user.role),
        is_active=user.is_active,
        mfa_enabled=user.mfa_enabled,
        has_approval_key=user.approval_key_pem is not None,
        approval_key_fingerprint=user.approval_key_fingerprint,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )
