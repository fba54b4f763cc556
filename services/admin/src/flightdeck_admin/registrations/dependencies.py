"""What the registration routes need besides the session: settings and the password hasher."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from flightdeck_admin.settings import Settings
from flightdeck_common.dependencies import inline
from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.resources import Resources


@contextlib.asynccontextmanager
async def password_hasher_lifespan(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
    """One argon2id hasher per app, peppered like auth's (its hashes are handed to auth)."""
    pepper = getattr(resources.settings, "password_pepper", None)
    app.state.password_hasher = PasswordHasher(
        pepper.get_secret_value() if pepper else None,
        time_cost=resources.settings.password_hash_time_cost,
        memory_cost=resources.settings.password_hash_memory_kib,
    )
    yield


def get_password_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.password_hasher
    return hasher


PasswordHasherDep = Annotated[PasswordHasher, Depends(inline(get_password_hasher))]


def get_admin_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(inline(get_admin_settings))]
