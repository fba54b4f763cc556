"""API shapes of the login flow."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LoginRequest(BaseModel):
    # Lengths are checked loosely here and precisely by the rules, so a 1 MB username is a
    # 422 from validation and never reaches the password hasher.
    username: str = Field(min_length=1, max_length=256, examples=["alice"])
    password: str = Field(min_length=1, max_length=1024, examples=["correct horse battery staple"])


class MfaLoginRequest(BaseModel):
    mfa_token: str = Field(min_length=1, max_length=512)
    code: str = Field(min_length=1, max_length=16, examples=["123456"])
