"""Shapes of the internal API (service tokens only)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from flightdeck_common.auth.claims import Role


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
