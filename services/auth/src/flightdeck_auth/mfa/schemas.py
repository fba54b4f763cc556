"""API shapes of TOTP enrolment."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TotpEnrolment(BaseModel):
    secret: str = Field(description="Base32 secret; shown once. Prefer scanning the URI.")
    otpauth_uri: str


class TotpCode(BaseModel):
    code: str = Field(min_length=1, max_length=16, examples=["123456"])
