"""API shapes of user administration (users live in auth; these mirror its internal API)."""

from __future__ import annotations

from fastapi.openapi.models import Example
from pydantic import BaseModel, Field, model_validator

from flightdeck_admin.auth_api import AuthUser
from flightdeck_common.auth.claims import Role


class UserRead(AuthUser):
    """A user account (held by the auth service)."""


class UserUpdate(BaseModel):
    role: Role | None = Field(None, description="New role.")
    is_active: bool | None = Field(
        None, description="false ends every session of the user at once."
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> UserUpdate:
        if self.role is None and self.is_active is None:
            raise ValueError("give role and/or is_active")
        return self


USER_UPDATE_EXAMPLES: dict[str, Example] = {
    "promote": {"summary": "Make a user an operator", "value": {"role": "operator"}},
    "deactivate": {
        "summary": "Deactivate a user (ends their sessions)",
        "value": {"is_active": False},
    },
}
