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
    MfaRequired,
)
from flightdeck_auth.failures import keep_and_fail
from flightdeck_auth.login.attempts import (
    fail_attempt,
    reserve_password_attempt,
    reserve_second_factor_attempt,
)
from flightdeck_auth.metrics import count_login
from flightdeck_auth.mfa.repository import MfaChallengeRepository
from flightdeck_auth.outbox import audit
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.risk import LoginContext, assess_login
from flightdeck_auth.security.throttle import Attempt
from flightdeck_auth.security.totp import verify_totp
from flightdeck_auth.security.totp_secrets import open_totp_secret
from flightdeck_auth.tokens.refresh import RefreshTokenRepository
from flightdeck_auth.tokens.schemas import TokenPair
from flightdeck_auth.users.models import User
from flightdeck_auth.users.repository import UserRepository
from flightdeck_auth.users.schemas import user_read
from flightdeck_common.auth.claims import TokenClaims
from flightdeck_common.db import utcnow
from flightdeck_common.errors import FlightdeckError
from flightdeck_common.passwords import InvalidUsername, normalize_username

logger = logging.getLogger(__name__)


async def password_login(
    session: AsyncSession, rt: AuthRuntime, raw_username: str, password: str, ip: str
) -> TokenPair:
    try:
        username = normalize_username(raw_username)
    except InvalidUsername:
        username = raw_username.strip().casefold()[:80]  # counted, never matches a user
    # The attempt counts as a failure before the (slow) hash is checked, so parallel
    # guesses cannot all pass a lock that the first failures are about to set.
    try:
        attempt = await reserve_password_attempt(session, rt, username, ip)
    except AccountLocked:
        count_login("locked")
        raise

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
        reason = "bad_password" if user is not None and user.is_active else "unknown_or_inactive"
        raise await _failed_login(session, rt, attempt, username, ip, reason)
    assert user is not None

    known = await users.known_ip(user.id, ip)
    decision = assess_login(
        LoginContext(
            # Confirmed failures only: parallel logins still in flight are not failures.
            recent_failures=await rt.throttle.confirmed_failures(attempt),
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
        # Answered and counted exactly as a wrong password: a different answer would tell
        # whoever is guessing that this password is the right one.
        count_login("denied")
        raise await _failed_login(session, rt, attempt, username, ip, "denied_by_policy")
    if rt.hasher.needs_rehash(user.password_hash):
        user.password_hash = await rt.hasher.hash(password)
    # Clears this username's password failures; its second-factor failures stay.
    await rt.throttle.succeeded(attempt)

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


async def _failed_login(
    session: AsyncSession, rt: AuthRuntime, attempt: Attempt, username: str, ip: str, reason: str
) -> FlightdeckError:
    await audit(session, "login.failed", actor=username, ip=ip, reason=reason)
    if reason != "denied_by_policy":
        count_login("failed")
    return await fail_attempt(session, rt, attempt, InvalidCredentials(), actor=username, ip=ip)


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
    claimed = await challenges.claim_attempt(mfa_token, rt.settings.mfa_max_attempts)
    # Commit the counted attempt at once: the row lock is not held while the code is checked.
    await session.commit()
    if claimed is None:
        raise InvalidMfaToken()
    user = await session.get(User, claimed.user_id)
    if user is None or not user.is_active or not user.mfa_enabled or user.totp_secret is None:
        raise InvalidMfaToken()
    try:
        attempt = await reserve_second_factor_attempt(session, rt, user, ip)
    except AccountLocked:
        count_login("locked")
        raise
    counter = verify_totp(
        open_totp_secret(rt.box, user.id, user.totp_secret),
        code,
        last_used_counter=user.totp_last_counter,
    )
    if counter is None:
        await audit(session, "login.mfa_failed", actor=user.username, ip=ip)
        count_login("mfa_failed")
        raise await fail_attempt(session, rt, attempt, InvalidMfaCode(), actor=user.username, ip=ip)
    if not await challenges.spend(claimed.challenge_id):  # a concurrent request spent it
        await rt.throttle.succeeded(attempt)
        raise InvalidMfaToken()
    if not await UserRepository(session).advance_totp_counter(user, counter):
        await audit(session, "login.mfa_failed", actor=user.username, ip=ip, reason="reused")
        count_login("mfa_failed")
        raise await fail_attempt(
            session,
            rt,
            attempt,
            InvalidMfaCode("This code was already used."),
            actor=user.username,
            ip=ip,
        )
    await rt.throttle.succeeded(attempt)
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
