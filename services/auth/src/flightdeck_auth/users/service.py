"""Rules on users: creation, bootstrap, passwords, roles, deactivation, approval keys."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.internal.schemas import SignedApproval
from flightdeck_auth.login.attempts import check_current_password
from flightdeck_auth.outbox import audit
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.approval_keys import parse_approval_key
from flightdeck_auth.security.step_up import require_step_up
from flightdeck_auth.tokens.refresh import RefreshTokenRepository
from flightdeck_auth.users.approvals import check_signed_approval
from flightdeck_auth.users.models import User
from flightdeck_auth.users.repository import UserRepository
from flightdeck_auth.users.schemas import ApprovalKeyUpdate
from flightdeck_common.db import utcnow
from flightdeck_common.errors import FlightdeckError
from flightdeck_common.passwords import check_password_policy, normalize_username
from flightdeck_common.user_errors import ActingAdminRequired, LastAdmin, UsernameTaken

logger = logging.getLogger(__name__)

# What admin may hand over on approval: an argon2id hash, never a plaintext password.
ARGON2ID_HASH = re.compile(
    r"^\$argon2id\$v=19\$m=\d{1,8},t=\d{1,3},p=\d{1,3}\$[A-Za-z0-9+/]{11,64}\$[A-Za-z0-9+/]{16,128}$"
)


class InvalidPasswordHash(FlightdeckError):
    status_code = 422
    code = "invalid_password_hash"
    title = "password_hash must be an argon2id hash"


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    password_hash: str,
    role: str,
    actor: str,
    origin_ref: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> tuple[User, bool]:
    """Create a user from a ready hash; with ``origin_ref`` a retried call returns the
    user it created before. ``evidence`` goes into the audit event. Returns (user, created)."""
    if not ARGON2ID_HASH.match(password_hash):
        raise InvalidPasswordHash()
    users = UserRepository(session)
    normalized = normalize_username(username)
    if origin_ref is not None:
        existing = await users.by_origin_ref(origin_ref)
        if existing is not None:
            if existing.username != normalized:
                raise UsernameTaken("This idempotency key created another user.")
            return existing, False
    if await users.by_username(normalized) is not None:
        raise UsernameTaken()
    user = User(
        username=normalized,
        password_hash=password_hash,
        role=role,
        is_active=True,
        origin_ref=origin_ref,
    )
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise UsernameTaken() from exc
    await audit(
        session,
        "user.created",
        actor=actor,
        subject=str(user.id),
        role=role,
        username=normalized,
        **(evidence or {}),
    )
    return user, True


async def create_user_for_service(
    session: AsyncSession,
    rt: AuthRuntime,
    *,
    username: str,
    password_hash: str,
    role: str,
    actor: str,
    origin_ref: str | None,
    approval: SignedApproval | None,
) -> tuple[User, bool]:
    """:func:`create_user` for the internal API: an ``admin`` only from the signed
    ``approval`` it comes from, verified here against the approver's key before anything
    else (a service token alone must not be able to mint an admin)."""
    if not ARGON2ID_HASH.match(password_hash):
        raise InvalidPasswordHash()
    approver = await check_signed_approval(
        session,
        approval,
        username=normalize_username(username),
        role=role,
        max_age_seconds=rt.settings.admin_approval_max_age_seconds,
    )
    evidence = (
        None
        if approval is None or approver is None
        else {
            "approval_request_id": approval.request_id,
            "approver_id": approver.id,
            "approval_key_fingerprint": approval.key_fingerprint,
            "approval_signed_at": approval.signed_at,
        }
    )
    return await create_user(
        session,
        username=username,
        password_hash=password_hash,
        role=role,
        actor=actor,
        origin_ref=origin_ref,
        evidence=evidence,
    )


async def bootstrap_admin(session: AsyncSession, rt: AuthRuntime) -> str | None:
    """Development only: create the first admin when there are no users.

    Returns the generated password (to be printed once) or None.
    """
    users = UserRepository(session)
    if await users.count() > 0:
        return None
    configured = rt.settings.bootstrap_admin_password
    password = configured.get_secret_value() if configured else secrets.token_urlsafe(18)
    username = normalize_username(rt.settings.bootstrap_admin_username)
    check_password_policy(password, username=username)
    session.add(
        User(
            username=username,
            password_hash=await rt.hasher.hash(password),
            role="admin",
            is_active=True,
        )
    )
    await session.flush()
    await audit(session, "user.bootstrap_admin_created", actor="system", subject=username)
    logger.warning("user.bootstrap_admin_created: %r (development bootstrap)", username)
    return None if configured else password


async def change_password(
    session: AsyncSession, rt: AuthRuntime, user: User, current: str, new: str, ip: str
) -> None:
    # A wrong current password counts as a failed login of this user (a stolen token
    # guesses no faster than the login form).
    await check_current_password(
        session, rt, user, current, ip, failed_event="user.password_change_failed"
    )
    check_password_policy(new, username=user.username)
    user.password_hash = await rt.hasher.hash(new)
    # Other sessions end: a changed password is often a response to a leak.
    await RefreshTokenRepository(session).revoke_user(user.id, "password_changed")
    await rt.revoker.revoke_subject(session, str(user.id), "password_changed")
    await audit(session, "user.password_changed", actor=user.username, subject=str(user.id))


async def set_approval_key(
    session: AsyncSession, rt: AuthRuntime, user: User, body: ApprovalKeyUpdate, *, ip: str
) -> None:
    """Register the key after a step-up (password and TOTP code): a stolen session alone
    must not be able to plant a key that then signs approvals. The key is checked first,
    so a malformed one does not spend a TOTP code."""
    key = parse_approval_key(body.public_key_pem)
    await require_step_up(session, rt, user, body, ip=ip, purpose="registering an approval key")
    previous = user.approval_key_fingerprint
    user.approval_key_pem = key.pem
    user.approval_key_fingerprint = key.fingerprint
    user.approval_key_updated_at = utcnow()
    await audit(
        session,
        "user.approval_key_changed",
        actor=user.username,
        subject=str(user.id),
        algorithm=key.algorithm,
        fingerprint=key.fingerprint,
        previous_fingerprint=previous,
    )


def _can_grant_admin(acting_user: User | None) -> bool:
    return acting_user is not None and acting_user.is_active and acting_user.role == "admin"


async def update_user(
    session: AsyncSession,
    rt: AuthRuntime,
    user: User,
    *,
    role: str | None,
    is_active: bool | None,
    actor: str,
    acting_user: User | None = None,
) -> User:
    """Change role and/or active flag; sessions end at once when either changes.

    Granting ``admin`` needs ``acting_user``: the active admin on whose behalf
    the service asks, proven by that admin's own access token. A service token alone
    grants no admin (it would make the signed approvals of new admins pointless)."""
    users = UserRepository(session)
    if role == "admin" and user.role != "admin" and not _can_grant_admin(acting_user):
        raise ActingAdminRequired(
            "Making a user an admin through the internal API needs the acting admin's own "
            "access token in X-Flightdeck-Acting-User (an active admin's); a "
            "service token alone cannot grant admin."
        )
    if (role is not None and role != "admin") or is_active is False:
        # The check and the change must not interleave with a concurrent one: lock first,
        # then look at the user and count the admins as they are now.
        await users.lock_active_admins()
        await session.refresh(user)
        loses_admin = user.role == "admin" and user.is_active
        if loses_admin and await users.count_active_admins() <= 1:
            raise LastAdmin()
    changes: dict[str, object] = {}
    if role is not None and role != user.role:
        changes["role"] = {"from": user.role, "to": role}
        user.role = role
    if is_active is not None and is_active != user.is_active:
        changes["is_active"] = {"from": user.is_active, "to": is_active}
        user.is_active = is_active
    if not changes:
        return user
    # Tokens carry the role, and a deactivated user must be out everywhere now.
    await RefreshTokenRepository(session).revoke_user(user.id, "user_updated")
    await rt.revoker.revoke_subject(session, str(user.id), "user_updated")
    event = (
        "user.deactivated" if changes.get("is_active") and not user.is_active else "user.updated"
    )
    await audit(session, event, actor=actor, subject=str(user.id), changes=changes)
    return user
