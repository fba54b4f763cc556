"""Throttled checks of a password or a second factor, for every route that takes one.

A check reserves its attempt before it runs (refused unchecked with 423 while the user or
the client address is locked for that factor), so it already counts as a failure; a
check that passes refunds it. A failed check answers as a failed login does: its own
error (401) or, when this failure locks, 423 ``account_locked`` with ``Retry-After``.

Passwords are counted per username, second factors (TOTP codes) per user; both per
client address (IPv6 by /64). Routes that take a factor outside the login (changing the
password, turning TOTP on or off, and any step-up check) use these functions, so a token
holder guesses no faster than a login does.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.exceptions import AccountLocked, InvalidCredentials, InvalidMfaCode
from flightdeck_auth.failures import keep_and_fail
from flightdeck_auth.metrics import count_lockout
from flightdeck_auth.outbox import audit
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.throttle import Attempt, Factor, LockState
from flightdeck_auth.security.totp import verify_totp
from flightdeck_auth.users.models import User
from flightdeck_auth.users.repository import UserRepository
from flightdeck_common.errors import FlightdeckError

_WHAT: dict[Factor, str] = {"password": "failed logins", "second_factor": "wrong codes"}


def locked_error(lock: LockState, factor: Factor = "password") -> AccountLocked:
    """The 423 answer for an active lock."""
    retry_after = max(1, int(lock.retry_after + 0.999))
    return AccountLocked(
        f"Too many {_WHAT[factor]} for this {lock.scope}; try again in {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


async def _refuse_if_locked(
    session: AsyncSession, attempt: Attempt, *, actor: str, ip: str
) -> Attempt:
    if attempt.refused is not None:
        await audit(
            session,
            "login.locked",
            actor=actor,
            ip=ip,
            scope=attempt.refused.scope,
            factor=attempt.factor,
        )
        raise await keep_and_fail(session, locked_error(attempt.refused, attempt.factor))
    return attempt


async def reserve_password_attempt(
    session: AsyncSession, rt: AuthRuntime, username: str, ip: str
) -> Attempt:
    """Reserve a password check for ``username`` (raises 423 while it is locked)."""
    attempt = await rt.throttle.reserve_password_attempt(username, ip)
    return await _refuse_if_locked(session, attempt, actor=username, ip=ip)


async def reserve_second_factor_attempt(
    session: AsyncSession, rt: AuthRuntime, user: User, ip: str
) -> Attempt:
    """Reserve a second-factor check for ``user`` (raises 423 while it is locked)."""
    attempt = await rt.throttle.reserve_second_factor_attempt(user.id, ip)
    return await _refuse_if_locked(session, attempt, actor=user.username, ip=ip)


async def fail_attempt(
    session: AsyncSession,
    rt: AuthRuntime,
    attempt: Attempt,
    error: FlightdeckError,
    *,
    actor: str,
    ip: str,
) -> FlightdeckError:
    """The reserved check failed: commit what was recorded and return the error to raise
    (``error``, or 423 when this failure locks)."""
    return await fail_attempts(session, rt, [attempt], error, actor=actor, ip=ip)


async def fail_attempts(
    session: AsyncSession,
    rt: AuthRuntime,
    attempts: Sequence[Attempt],
    error: FlightdeckError,
    *,
    actor: str,
    ip: str,
) -> FlightdeckError:
    """Several reserved checks of one request failed (a step-up's password and code):
    each counts; the error is ``error``, or 423 when one of these failures locks."""
    locked: tuple[Attempt, LockState] | None = None
    for attempt in attempts:
        await rt.throttle.failed(attempt)
        lock = attempt.lock_if_failed
        if lock is not None and (locked is None or lock.retry_after > locked[1].retry_after):
            locked = (attempt, lock)
    if locked is None:
        return await keep_and_fail(session, error)
    attempt, lock = locked
    await audit(
        session, "login.locked", actor=actor, ip=ip, scope=lock.scope, factor=attempt.factor
    )
    count_lockout(lock.scope)
    return await keep_and_fail(session, locked_error(lock, attempt.factor))


async def check_current_password(
    session: AsyncSession,
    rt: AuthRuntime,
    user: User,
    password: str,
    ip: str,
    *,
    failed_event: str = "user.password_check_failed",
) -> None:
    """Verify a signed-in user's password, throttled like a login (401 or 423); a wrong
    one is audited as ``failed_event``."""
    attempt = await reserve_password_attempt(session, rt, user.username, ip)
    if not await rt.hasher.verify(user.password_hash, password):
        await audit(session, failed_event, actor=user.username, subject=str(user.id), ip=ip)
        raise await fail_attempt(
            session,
            rt,
            attempt,
            InvalidCredentials("The current password is wrong."),
            actor=user.username,
            ip=ip,
        )
    await rt.throttle.succeeded(attempt)


async def check_second_factor(
    session: AsyncSession,
    rt: AuthRuntime,
    user: User,
    secret: str,
    code: str,
    ip: str,
    *,
    replay_protected: bool = True,
    failed_event: str = "user.second_factor_check_failed",
) -> int:
    """Verify a TOTP code of ``user`` against ``secret`` (the sealed one opened), throttled
    per user and address (401 or 423); return its time step. A wrong code is audited as
    ``failed_event``.

    With ``replay_protected`` the code must be newer than the last one used, and using it
    is recorded (a concurrent request with the same code fails).
    """
    attempt = await reserve_second_factor_attempt(session, rt, user, ip)
    last = user.totp_last_counter if replay_protected else None
    counter = verify_totp(secret, code, last_used_counter=last)
    if (
        counter is not None
        and replay_protected
        and not await UserRepository(session).advance_totp_counter(user, counter)
    ):
        counter = None
    if counter is None:
        await audit(session, failed_event, actor=user.username, subject=str(user.id), ip=ip)
        raise await fail_attempt(session, rt, attempt, InvalidMfaCode(), actor=user.username, ip=ip)
    await rt.throttle.succeeded(attempt)
    return counter
