"""API shapes of service-account administration."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flightdeck_auth.security.step_up import StepUp

# The audiences a service account may be given (INTERNAL_AUDIENCES in settings).
Audience = Literal[
    "flightdeck:auth-revocations", "flightdeck:auth-users", "flightdeck:admin-internal"
]


class ServiceAccountCreate(StepUp):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "client_id": "release-bot",
                    "audiences": ["flightdeck:admin-internal"],
                    "description": "Posts audit events from the release tooling",
                    "current_password": "my current password",
                    "totp_code": "123456",
                }
            ]
        }
    )

    client_id: str = Field(
        min_length=2,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$",
        description="2-64 characters of a-z, 0-9, '.', '_', '-'; starts with a letter or digit.",
    )
    audiences: list[Audience] = Field(
        min_length=1, max_length=3, description="Internal APIs the account may call."
    )
    description: str = Field("", max_length=200)


class ServiceAccountRead(BaseModel):
    client_id: str
    audiences: list[str]
    description: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ServiceAccountCreated(ServiceAccountRead):
    client_secret: str = Field(
        description="Shown once: store it now. Exchange it at POST /auth/service-token."
    )
