"""API shapes of the login flow."""

from __future__ import annotations

from fastapi.openapi.models import Example
from pydantic import BaseModel, Field


class LoginRequest(BaseModel):
    # Lengths are checked loosely here and precisely by the rules, so a 1 MB username is a
    # 422 from validation and never reaches the password hasher.
    username: str = Field(min_length=1, max_length=256, examples=["alice"])
    password: str = Field(min_length=1, max_length=1024, examples=["correct horse battery staple"])


class MfaLoginRequest(BaseModel):
    mfa_token: str = Field(min_length=1, max_length=512)
    code: str = Field(min_length=1, max_length=16, examples=["123456"])


LOGIN_EXAMPLES: dict[str, Example] = {
    "password": {
        "summary": "Username and password",
        "description": (
            "200 with a token pair, or 401 `mfa_required` with an `mfa_token` when the "
            "account has TOTP: finish with `POST /auth/login/mfa`."
        ),
        "value": {"username": "alice", "password": "correct horse battery staple"},
    }
}
MFA_LOGIN_EXAMPLES: dict[str, Example] = {
    "totp": {
        "summary": "The mfa_token of the 401 and a current TOTP code",
        "value": {"mfa_token": "q5Vt3xN8cA0rJ2mW9yK4pL7sD1fG6hZe", "code": "123456"},
    }
}
