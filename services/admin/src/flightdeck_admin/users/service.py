"""User administration: changes go to auth, the record of who made them to our audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_admin.auth_api import AuthApi, AuthUser
from flightdeck_admin.outbox import audit
from flightdeck_admin.users.schemas import UserUpdate
from flightdeck_common.auth.claims import TokenClaims


async def update_user(
    session: AsyncSession,
    api: AuthApi,
    user_id: int,
    body: UserUpdate,
    admin: TokenClaims,
    *,
    ip: str,
    admin_token: str,
) -> AuthUser:
    """Change role and/or active flag at auth; auth refuses to remove the last active admin
    (409) and ends the user's sessions. Granting admin goes with ``admin_token`` (the
    asking admin's own access token): auth grants admin on an admin's behalf only.
    Audited as ``admin.user.updated``."""
    actor = admin.actor_name
    before = await api.get_user(user_id)
    after = await api.update_user(
        user_id,
        role=body.role,
        is_active=body.is_active,
        actor=actor,
        acting_user_token=admin_token,
    )
    changes: dict[str, Any] = {}
    if before.role != after.role:
        changes["role"] = {"from": before.role.value, "to": after.role.value}
    if before.is_active != after.is_active:
        changes["is_active"] = {"from": before.is_active, "to": after.is_active}
    await audit(
        session,
        "user.updated",
        actor=actor,
        subject=str(user_id),
        ip=ip,
        username=after.username,
        requested=body.model_dump(exclude_none=True, mode="json"),
        changes=changes,
    )
    return after
