"""Rules of registration requests: filing, and the signed review that decides them.

A decision is accepted only with a fresh signature (``signed_at`` within the allowed
skew) by the reviewer's registered approval key over
``"{id}:{action}:{role}:{username}:{signed_at}"`` (role empty for a rejection), never used
before. Every refusal happens before anything changes. The signature and the public key it
verified with are kept with the decision, so it can be verified again later; auth checks
the approval itself before creating an admin from it. The applicant's password hash is
cleared once the request is decided (approved: after the account was made).

Approval creates the account at auth, which cannot share our transaction. So it runs in
steps: claim the request (pending -> approving, committed), create the user at auth
with the idempotency key ``registration-{id}``, then record the approval and its audit
event in one transaction. If auth fails the claim is released (back to pending); if the
process dies the claim expires and a later approval retakes it, and auth answers that
same key with the account it already made: never two accounts, never an approval
without one. When auth may have made the account without us hearing of it, the request
keeps its claim time: a rejection then first checks auth, so no account is left behind
a rejected request.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_admin.auth_api import AuthAnswerLost, AuthApi, AuthUser
from flightdeck_admin.outbox import audit
from flightdeck_admin.registrations.exceptions import (
    ApprovalKeyRequired,
    ApprovalMayHaveSucceeded,
    InvalidDecisionSignature,
    InvalidSignatureEncoding,
    InvalidSignedAt,
    RegistrationRequestNotFound,
    RequestAlreadyDecided,
    SignatureExpired,
    SignatureReplayed,
    UsernameUnavailable,
)
from flightdeck_admin.registrations.models import RegistrationRequest, RequestStatus
from flightdeck_admin.registrations.repository import RegistrationRepository
from flightdeck_admin.registrations.schemas import (
    ApprovalDecision,
    RegistrationCreate,
    ReviewDecision,
)
from flightdeck_admin.settings import Settings
from flightdeck_common.approval_signatures import approval_message, verify_approval_signature
from flightdeck_common.auth.claims import Role, TokenClaims
from flightdeck_common.auth.errors import InsufficientRole
from flightdeck_common.db import session_scope, utcnow
from flightdeck_common.errors import FlightdeckError
from flightdeck_common.passwords import PasswordHasher, check_password_policy, normalize_username
from flightdeck_common.user_errors import ApprovalKeyNotFound, UsernameTaken, UserNotFound

logger = logging.getLogger(__name__)

Action = Literal["approve", "reject"]

_ISO_8601_CHARACTERS = re.compile(r"[0-9TWZtz:.,+\- ]+")

# The same words whether the name is taken at auth or already requested here.
USERNAME_UNAVAILABLE = (
    "This username cannot be requested: it is already in use or awaiting review. "
    "Choose another one."
)


def idempotency_key(request_id: int) -> str:
    """The key auth creates the account of request ``request_id`` under (at most once)."""
    return f"registration-{request_id}"


def signed_message(
    request_id: int, action: Action, role: str | None, username: str, signed_at: str
) -> bytes:
    """The exact bytes a reviewer signs (UTF-8):
    ``"{id}:{action}:{role}:{username}:{signed_at}"``, role empty for a rejection."""
    return approval_message(request_id, action, role, username, signed_at)


# --- filing -------------------------------------------------------------------------


async def file_request(
    session: AsyncSession,
    api: AuthApi,
    hasher: PasswordHasher,
    body: RegistrationCreate,
    *,
    ip: str,
) -> RegistrationRequest:
    """Validate and store a request; the password is kept only as an argon2id hash."""
    username = normalize_username(body.username)
    check_password_policy(body.password, username=username)
    requests = RegistrationRepository(session)
    # Both checks always run, so the answer's timing does not tell which one refused.
    already_requested = await requests.open_request_for(username) is not None
    # Hold no pooled connection across the call to auth and the argon2 hash (seconds
    # under load); the insert below opens a new transaction.
    await session.commit()
    taken = await api.find_user_by_username(username) is not None
    if already_requested or taken:
        raise UsernameUnavailable(USERNAME_UNAVAILABLE)
    request = RegistrationRequest(
        username=username,
        password_hash=await hasher.hash(body.password),
        reason=body.reason,
        status=RequestStatus.PENDING.value,
        ip=ip,
    )
    try:
        async with session.begin_nested():
            session.add(request)
            await session.flush()
    except IntegrityError as exc:  # a concurrent request for the name won the race
        raise UsernameUnavailable(USERNAME_UNAVAILABLE) from exc
    await audit(
        session,
        "registration.requested",
        actor=username,
        subject=str(request.id),
        ip=ip,
        username=username,
        reason=body.reason,
    )
    return request


async def get_request(session: AsyncSession, request_id: int) -> RegistrationRequest:
    request = await RegistrationRepository(session).get_by_id(request_id)
    if request is None:
        raise RegistrationRequestNotFound()
    return request


# --- review ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedDecision:
    """A review decision whose signature checked out (nothing recorded yet)."""

    request_id: int
    username: str
    password_hash: str
    reviewer: str
    reviewer_id: str
    note: str | None
    signed_at: str
    signature: str
    signature_sha256: str
    key_fingerprint: str
    public_key_pem: str
    role: Role | None = None
    approval_interrupted: bool = False

    def fields(self) -> dict[str, Any]:
        """The request's columns this decision sets."""
        return {
            "decided_at": utcnow(),
            "decided_by": self.reviewer,
            "decided_by_id": self.reviewer_id,
            "decision_note": self.note,
            "signed_at": self.signed_at,
            "signature": self.signature,
            "signature_sha256": self.signature_sha256,
            "key_fingerprint": self.key_fingerprint,
            "public_key_pem": self.public_key_pem,
            # The applicant's hash has done its work once the request is decided.
            "password_hash": None,
        }

    def signed_approval(self) -> dict[str, Any]:
        """The approval as auth's internal API takes it (auth verifies it again)."""
        assert self.role is not None
        return {
            "request_id": self.request_id,
            "decision": "approve",
            "role": self.role.value,
            "username": self.username,
            "signed_at": self.signed_at,
            "signature": self.signature,
            "approver_id": int(self.reviewer_id),
            "key_fingerprint": self.key_fingerprint,
        }

    def audit_data(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "reviewer": self.reviewer,
            "reviewer_id": self.reviewer_id,
            "signed_at": self.signed_at,
            "signature_sha256": self.signature_sha256,
            "signature": self.signature,
            "key_fingerprint": self.key_fingerprint,
        }


async def approve(
    sessionmaker: async_sessionmaker[AsyncSession],
    api: AuthApi,
    settings: Settings,
    request_id: int,
    body: ApprovalDecision,
    reviewer: TokenClaims,
    *,
    ip: str,
) -> RegistrationRequest:
    """Approve with a signed decision: the account exists at auth once this returns."""
    decision = await _verify(sessionmaker, api, settings, request_id, "approve", body, reviewer)
    claimed_at = utcnow()
    abandoned_before = claimed_at - timedelta(seconds=settings.approval_claim_timeout_seconds)
    async with session_scope(sessionmaker) as session:
        claimed = await RegistrationRepository(session).claim_for_approval(
            request_id, claimed_at=claimed_at, abandoned_before=abandoned_before
        )
    if not claimed:
        raise await _not_open(sessionmaker, request_id)

    try:
        user = await api.create_user(
            username=decision.username,
            password_hash=decision.password_hash,
            role=body.role,
            idempotency_key=idempotency_key(request_id),
            actor=decision.reviewer,
            approval=decision.signed_approval(),
        )
    except UsernameTaken as exc:
        # Definitive: had our key made an account, auth would have returned it.
        await _release(sessionmaker, request_id, claimed_at, maybe_created=False)
        raise UsernameTaken(
            "Another account already has this username at auth; the request stays pending "
            "(reject it)."
        ) from exc
    except AuthAnswerLost:
        await _release(sessionmaker, request_id, claimed_at, maybe_created=True)
        raise
    except FlightdeckError:
        # Auth was not reached or refused the call (503, 4xx): this call made no account,
        # an earlier interrupted one still may have.
        await _release(
            sessionmaker, request_id, claimed_at, maybe_created=decision.approval_interrupted
        )
        raise
    except BaseException:
        # Cancelled or broken mid-call: the account may exist.
        await _release(sessionmaker, request_id, claimed_at, maybe_created=True)
        raise

    try:
        async with session_scope(sessionmaker) as session:
            recorded = await RegistrationRepository(session).complete_approval(
                request_id,
                claimed_at=claimed_at,
                # The account's role: an earlier interrupted approval may have set another.
                decision={**decision.fields(), "role": user.role.value, "user_id": user.id},
            )
            if recorded:
                await _audit_approval(session, decision, user, ip=ip)
    except IntegrityError as exc:  # the signature was recorded concurrently elsewhere
        await _release(sessionmaker, request_id, claimed_at, maybe_created=True)
        raise SignatureReplayed("This signature has already been used.") from exc
    if not recorded:
        # Our claim expired and another approval took over; it records the same account.
        raise RequestAlreadyDecided(
            "Another approval of this request took over while the account was being created."
        )
    return await _reload(sessionmaker, request_id)


async def reject(
    sessionmaker: async_sessionmaker[AsyncSession],
    api: AuthApi,
    settings: Settings,
    request_id: int,
    body: ReviewDecision,
    reviewer: TokenClaims,
    *,
    ip: str,
) -> RegistrationRequest:
    """Reject a pending request with a signed decision."""
    decision = await _verify(sessionmaker, api, settings, request_id, "reject", body, reviewer)
    if decision.approval_interrupted and await api.find_user_by_username(decision.username):
        raise ApprovalMayHaveSucceeded(
            "An interrupted approval may have created this account at auth already; "
            "approve the request to finish it (auth returns that same account). To turn "
            "the person away, approve and then deactivate the account."
        )
    try:
        async with session_scope(sessionmaker) as session:
            rejected = await RegistrationRepository(session).reject(
                request_id, decision=decision.fields()
            )
            if rejected:
                await audit(
                    session,
                    "registration.rejected",
                    actor=decision.reviewer,
                    subject=str(request_id),
                    ip=ip,
                    **decision.audit_data(),
                )
    except IntegrityError as exc:
        raise SignatureReplayed("This signature has already been used.") from exc
    if not rejected:
        raise await _not_open(sessionmaker, request_id)
    return await _reload(sessionmaker, request_id)


async def _verify(
    sessionmaker: async_sessionmaker[AsyncSession],
    api: AuthApi,
    settings: Settings,
    request_id: int,
    action: Action,
    body: ReviewDecision,
    reviewer: TokenClaims,
) -> VerifiedDecision:
    """Every check of a decision, in order; each refusal is a 4xx and changes nothing."""
    async with session_scope(sessionmaker) as session:
        requests = RegistrationRepository(session)
        request = await requests.get_by_id(request_id)
        if request is None:
            raise RegistrationRequestNotFound()
        check_signed_at(body.signed_at, now=utcnow(), max_skew=settings.approval_max_skew_seconds)
        signature = decode_signature(body.signature)
        signature_sha256 = hashlib.sha256(signature).hexdigest()
        if await requests.signature_used(signature_sha256):
            raise SignatureReplayed("This signature has already been used; sign a new decision.")
        if not _open_for(request, action, settings):
            raise _not_open_error(request)
        username, password_hash = request.username, request.password_hash
        if password_hash is None:  # cleared by a decision: the request is not open
            raise _not_open_error(request)
        # A claim time on a pending request, or an abandoned claim: an approval broke off
        # without knowing whether auth created the account.
        approval_interrupted = request.claimed_at is not None

    reviewer_name = reviewer.actor_name
    reviewer_id = reviewer.user_id or ""
    if not reviewer_id.isdigit():
        raise ApprovalKeyRequired("Only user accounts with an approval key can decide.")
    await _check_still_admin(api, int(reviewer_id))
    try:
        key = await api.approval_key(int(reviewer_id))
    except (ApprovalKeyNotFound, UserNotFound) as exc:
        raise ApprovalKeyRequired(
            "You have no approval key: register your public key with "
            "PUT /auth/me/approval-key, then sign the decision with its private key."
        ) from exc
    role = body.role if isinstance(body, ApprovalDecision) else None
    message = signed_message(
        request_id, action, role.value if role else None, username, body.signed_at
    )
    if not verify_approval_signature(key.public_key_pem, message, signature):
        raise InvalidDecisionSignature(
            f'The signature does not verify over "{message.decode()}" with your approval '
            f"key (fingerprint {key.fingerprint})."
        )
    return VerifiedDecision(
        request_id=request_id,
        username=username,
        password_hash=password_hash,
        reviewer=reviewer_name,
        reviewer_id=reviewer_id,
        note=body.note,
        signed_at=body.signed_at,
        signature=body.signature,
        signature_sha256=signature_sha256,
        key_fingerprint=key.fingerprint,
        public_key_pem=key.public_key_pem,
        role=role,
        approval_interrupted=approval_interrupted,
    )


async def _check_still_admin(api: AuthApi, reviewer_id: int) -> None:
    """The token says admin; auth must still say so (a demotion may be seconds old)."""
    try:
        account = await api.get_user(reviewer_id)
    except UserNotFound:
        account = None
    if account is None or not account.is_active or account.role is not Role.ADMIN:
        raise InsufficientRole("Your account is no longer an active admin.")


def check_signed_at(signed_at: str, *, now: datetime, max_skew: int) -> datetime:
    """Parse ``signed_at`` (ISO-8601 with an offset) and check it is within ``max_skew``
    seconds of ``now``; raises ``InvalidSignedAt`` or ``SignatureExpired`` (400)."""
    moment = None
    # What ISO-8601 needs, nothing else (fromisoformat would stop at a NUL, for one).
    if _ISO_8601_CHARACTERS.fullmatch(signed_at):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(signed_at)
    if moment is None or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidSignedAt(
            "signed_at must be an ISO-8601 timestamp with a UTC offset, "
            "e.g. 2026-11-25T10:15:00+00:00 or 2026-11-25T10:15:00Z."
        )
    try:
        skew = (now - moment.astimezone(UTC)).total_seconds()
    except (OverflowError, ValueError) as exc:
        raise InvalidSignedAt("signed_at is out of range.") from exc
    if abs(skew) > max_skew:
        direction = "in the past" if skew > 0 else "in the future"
        raise SignatureExpired(
            f"signed_at is {abs(skew):.0f} s {direction}; it must be within {max_skew} s "
            f"of the server time ({now.astimezone(UTC).isoformat(timespec='seconds')}). "
            "Sign a new decision.",
            skew_seconds=round(skew),
        )
    return moment


def decode_signature(signature: str) -> bytes:
    """Strict standard base64 (``base64 -w0``); raises ``InvalidSignatureEncoding`` (400)."""
    try:
        decoded = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignatureEncoding(
            "signature must be standard base64 of the raw signature bytes (base64 -w0)."
        ) from exc
    if not decoded:
        raise InvalidSignatureEncoding("signature is empty.")
    return decoded


def _open_for(request: RegistrationRequest, action: Action, settings: Settings) -> bool:
    if request.status == RequestStatus.PENDING:
        return True
    # An approval may take over an abandoned claim; a rejection must not (the account
    # may exist at auth already, and only finishing the approval records it).
    return action == "approve" and _claim_abandoned(request, settings)


def _claim_abandoned(request: RegistrationRequest, settings: Settings) -> bool:
    if request.status != RequestStatus.APPROVING or request.claimed_at is None:
        return False
    age = (utcnow() - request.claimed_at).total_seconds()
    return age > settings.approval_claim_timeout_seconds


def _not_open_error(request: RegistrationRequest) -> RequestAlreadyDecided:
    if request.status == RequestStatus.APPROVING:
        return RequestAlreadyDecided(
            "This request is being approved right now; if it stays so, an approval can "
            "take over after a few minutes."
        )
    if request.status == RequestStatus.PENDING:
        return RequestAlreadyDecided("This request changed meanwhile; try again.")
    return RequestAlreadyDecided(f"This request has already been {request.status}.")


async def _not_open(
    sessionmaker: async_sessionmaker[AsyncSession], request_id: int
) -> RequestAlreadyDecided:
    """Why a conditional update found nothing to change (a concurrent decision)."""
    return _not_open_error(await _reload(sessionmaker, request_id))


async def _release(
    sessionmaker: async_sessionmaker[AsyncSession],
    request_id: int,
    claimed_at: datetime,
    *,
    maybe_created: bool,
) -> None:
    """Our claim back to pending (``maybe_created``: keeping the claim time as the trace
    of an approval that may have made the account); if even that fails the claim
    expires by itself."""
    try:
        async with session_scope(sessionmaker) as session:
            await RegistrationRepository(session).release_claim(
                request_id, claimed_at=claimed_at, keep_claim_time=maybe_created
            )
    except Exception:
        logger.exception("could not release the approval claim of request %s", request_id)


async def _reload(
    sessionmaker: async_sessionmaker[AsyncSession], request_id: int
) -> RegistrationRequest:
    async with session_scope(sessionmaker) as session:
        request = await RegistrationRepository(session).get_by_id(request_id)
    if request is None:  # requests are never deleted
        raise RegistrationRequestNotFound()
    return request


async def _audit_approval(
    session: AsyncSession, decision: VerifiedDecision, user: AuthUser, *, ip: str
) -> None:
    await audit(
        session,
        "registration.approved",
        actor=decision.reviewer,
        subject=str(decision.request_id),
        ip=ip,
        role=user.role.value,
        user_id=user.id,
        **decision.audit_data(),
    )
