"""Password login, the MFA step, refresh and logout."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.exceptions import (
    AccountLocked,
    InvalidCredentials,
    InvalidMfaCode,
    InvalidMfaToken,
    InvalidRefreshToken,
    LoginDenied,
    MfaRequired,
)
from flightdeck_auth.failures import keep_and_fail
from flightdeck_auth.metrics import count_lockout, count_login
from flightdeck_auth.mfa.repository import MfaChallengeRepository
from flightdeck_auth.outbox import audit
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.risk import LoginContext, assess_login
from flightdeck_auth.security.throttle import LockState
from flightdeck_auth.security.totp import verify_totp
from flightdeck_auth.security.totp_secrets import open_totp_secret
from flightdeck_auth.tokens.refresh import RefreshTokenRepository
from flightdeck_auth.tokens.schemas import TokenPair
from flightdeck_auth.users.models import User
from flightdeck_auth.users.repository import UserRepository
from flightdeck_auth.users.schemas import user_read
from flightdeck_common.auth.claims import TokenClaims
from flightdeck_common.db import utcnow
from flightdeck_common.passwords import InvalidUsername, normalize_username

logger = logging.getLogger(__name__)


def _locked(lock: LockState) -> AccountLocked:
    retry_after = max(1, int(lock.retry_after + 0.999))
    return AccountLocked(
        f"Too many failed logins for this {lock.scope}; try again in {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


async def password_login(
    session: AsyncSession, rt: AuthRuntime, raw_username: str, password: str, ip: str
) -> TokenPair:
    try:
        username = normalize_username(raw_username)
    except InvalidUsername:
        username = raw_username.strip().casefold()[:80]  # counted, never matches a user
    lock = await rt.throttle.check(username, ip)
    if lock is not None:
        await audit(session, "login.locked", actor=username, ip=ip, scope=lock.scope)
        count_login("locked")
        raise await keep_and_fail(session, _locked(lock))

    users = UserRepository(session)
    user = await users.by_username(username)
    # Nothing is written yet: end the read so no pooled connection is held while argon2
    # runs. Under a login flood a verification queues for the hashing threads for
    # seconds; holding connections meanwhile starved every other request, /readyz
    # included, of the pool. The next query opens a new transaction.
    await session.commit()
    if user is None or not user.is_active:
        # Same work as a real check, so response time does not reveal which users exist.
        await rt.hasher.dummy_verify()
        verified = False
    else:
        verified = await rt.hasher.verify(user.password_hash, password)
    if not verified:
        lock = await rt.throttle.record_failure(username, ip)
        reason = "bad_password" if user is not None and user.is_active else "unknown_or_inactive"
        await audit(session, "login.failed", actor=username, ip=ip, reason=reason)
        count_login("failed")
        if lock is not None:
            await audit(session, "login.locked", actor=username, ip=ip, scope=lock.scope)
            count_lockout(lock.scope)
            raise await keep_and_fail(session, _locked(lock))
        raise await keep_and_fail(session, InvalidCredentials())
    assert user is not None

    if rt.hasher.needs_rehash(user.password_hash):
        user.password_hash = await rt.hasher.hash(password)

    known = await users.known_ip(user.id, ip)
    decision = assess_login(
        LoginContext(
            recent_failures=await rt.throttle.failures(username),
            ip=ip,
            known_ip=bool(known),
            first_login=known is None,
            at=utcnow(),
        ),
        rt.risk_rules,
    )
    await audit(
        session,
        "login.policy_decision",
        actor=user.username,
        subject=str(user.id),
        ip=ip,
        decision=decision.decision,
        score=decision.score,
        reasons=decision.reasons,
    )
    if decision.decision == "deny":
        count_login("denied")
        raise await keep_and_fail(
            session, LoginDenied("This login looks too risky; contact an admin.")
        )
    await rt.throttle.record_success(username, ip)

    if user.mfa_enabled:
        token = await MfaChallengeRepository(session).create(
            user.id, ip, rt.settings.mfa_token_ttl_seconds
        )
        await audit(session, "login.mfa_challenged", actor=user.username, ip=ip)
        count_login("mfa_challenged")
        raise await keep_and_fail(
            session,
            MfaRequired(
                "Complete the login with POST /auth/login/mfa and a TOTP code.",
                mfa_token=token,
                expires_in=rt.settings.mfa_token_ttl_seconds,
            ),
        )
    if decision.decision == "challenge":
        # No second factor to ask for: allowed (so a new admin can enrol) and audited.
        await audit(session, "login.challenge_without_mfa", actor=user.username, ip=ip)
    return await complete_login(session, rt, user, ip, method="password")


async def complete_login(
    session: AsyncSession, rt: AuthRuntime, user: User, ip: str, *, method: str
) -> TokenPair:
    await UserRepository(session).remember_ip(user.id, ip)
    user.last_login_at = utcnow()
    access = await rt.issuer.access_token(user)
    refresh = await RefreshTokenRepository(session).issue(
        user.id,
        min(rt.settings.refresh_token_ttl_seconds, rt.settings.refresh_family_max_age_seconds),
    )
    await audit(
        session, "login.succeeded", actor=user.username, subject=str(user.id), ip=ip, method=method
    )
    count_login("succeeded")
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh,
        expires_in=access.expires_in,
        user=user_read(user),
    )


async def mfa_login(
    session: AsyncSession, rt: AuthRuntime, mfa_token: str, code: str, ip: str
) -> TokenPair:
    challenges = MfaChallengeRepository(session)
    challenge = await challenges.usable(mfa_token, rt.settings.mfa_max_attempts)
    if challenge is None:
        raise InvalidMfaToken()
    user = await session.get(User, challenge.user_id)
    if user is None or not user.is_active or not user.mfa_enabled or user.totp_secret is None:
        raise InvalidMfaToken()
    counter = verify_totp(
        open_totp_secret(rt.box, user.id, user.totp_secret),
        code,
        last_used_counter=user.totp_last_counter,
    )
    if counter is None:
        challenge.failed_attempts += 1
        await audit(session, "login.mfa_failed", actor=user.username, ip=ip)
        count_login("mfa_failed")
        raise await keep_and_fail(session, InvalidMfaCode())
    if not await challenges.spend(challenge):
        raise InvalidMfaToken()
    if not await UserRepository(session).advance_totp_counter(user, counter):
        count_login("mfa_failed")
        raise await keep_and_fail(session, InvalidMfaCode("This code was already used."))
    return await complete_login(session, rt, user, ip, method="password+totp")


async def refresh(session: AsyncSession, rt: AuthRuntime, token: str, ip: str) -> TokenPair:
    tokens = RefreshTokenRepository(session)
    rotated = await tokens.rotate(
        token, rt.settings.refresh_token_ttl_seconds, rt.settings.refresh_family_max_age_seconds
    )
    if rotated is None:
        raise InvalidRefreshToken()
    if rotated.family_expired:
        raise await keep_and_fail(
            session, InvalidRefreshToken("This session reached its maximum lifetime; log in again.")
        )
    user = await session.get(User, rotated.user_id) if rotated.user_id is not None else None
    if rotated.reused:
        # A spent token came back: someone holds a copy. End the family, and every access
        # token of the user (the copy may already have minted some).
        if rotated.user_id is not None:
            await rt.revoker.revoke_subject(session, str(rotated.user_id), "refresh_token_reuse")
        await audit(
            session,
            "refresh_token.reuse_detected",
            actor=user.username if user else None,
            subject=str(rotated.user_id),
            ip=ip,
            family_id=rotated.family_id,
        )
        raise await keep_and_fail(
            session, InvalidRefreshToken("Refresh token reuse detected; log in again.")
        )
    if user is None or not user.is_active:
        raise InvalidRefreshToken()
    assert rotated.token is not None
    access = await rt.issuer.access_token(user)
    return TokenPair(
        access_token=access.token,
        refresh_token=rotated.token,
        expires_in=access.expires_in,
        user=user_read(user),
    )


async def logout(
    session: AsyncSession, rt: AuthRuntime, claims: TokenClaims, refresh_token: str | None, ip: str
) -> None:
    if refresh_token is not None:
        tokens = RefreshTokenRepository(session)
        row = await tokens.by_token(refresh_token)
        if row is not None and str(row.user_id) == claims.sub:
            await tokens.revoke_family(row.family_id, "logout")
    await rt.revoker.revoke_token(session, claims.jti, claims.expires_at, "logout")
    await audit(session, "logout", actor=claims.username, subject=claims.sub, ip=ip)
