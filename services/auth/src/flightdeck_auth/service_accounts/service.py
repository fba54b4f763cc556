"""Service accounts: created by the CLI or an admin (secret shown once), exchanged for
service tokens, deactivated by an admin."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_auth.exceptions import (
    InvalidClient,
    InvalidScope,
    ServiceAccountExists,
    ServiceAccountNotFound,
)
from flightdeck_auth.failures import keep_and_fail
from flightdeck_auth.metrics import count_service_token
from flightdeck_auth.outbox import audit
from flightdeck_auth.runtime import AuthRuntime
from flightdeck_auth.security.step_up import StepUp, require_step_up
from flightdeck_auth.service_accounts.models import ServiceAccount
from flightdeck_auth.settings import INTERNAL_AUDIENCES
from flightdeck_auth.tokens.schemas import ServiceToken
from flightdeck_auth.users.models import User
from flightdeck_common.errors import BadRequest
from flightdeck_common.repository import RepositoryBase

CLIENT_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
# The services' own names: admin records an audit event's service as the submitting
# account's client id, so an account named like a service would write in its name. Only
# the built-in accounts (CLI on the host, development bootstrap) may take them; ``auth``
# never has an account (it mints its own tokens).
RESERVED_CLIENT_IDS = frozenset({"auth", "pipeline", "admin"})
BUILT_IN_CLIENT_IDS = RESERVED_CLIENT_IDS - {"auth"}


async def upsert_service_account(
    session: AsyncSession,
    rt: AuthRuntime,
    client_id: str,
    audiences: list[str],
    *,
    secret: str | None = None,
    description: str = "",
) -> str:
    """Create (or re-key) a service account; returns its secret (generated when not given)."""
    if not CLIENT_ID.match(client_id):
        raise BadRequest("client_id: 2-64 characters of a-z, 0-9, '.', '_', '-'")
    if client_id in RESERVED_CLIENT_IDS - BUILT_IN_CLIENT_IDS:
        raise BadRequest(f"client_id {client_id!r} is reserved (auth mints its own tokens)")
    unknown = set(audiences) - set(INTERNAL_AUDIENCES)
    if not audiences or unknown:
        raise BadRequest(f"audiences must be among {', '.join(INTERNAL_AUDIENCES)}")
    secret = secret or secrets.token_urlsafe(32)
    secret_hash = await rt.hasher.hash(secret)
    account = await session.scalar(
        select(ServiceAccount).where(ServiceAccount.client_id == client_id)
    )
    if account is None:
        account = ServiceAccount(client_id=client_id, secret_hash=secret_hash, is_active=True)
        session.add(account)
    elif not await rt.hasher.verify(account.secret_hash, secret):
        account.secret_hash = secret_hash
    account.audiences = " ".join(sorted(set(audiences)))
    account.description = description[:200]
    await session.flush()
    await audit(
        session, "service_account.saved", actor="system", subject=client_id, audiences=audiences
    )
    return secret


class ServiceAccountRepository(RepositoryBase[ServiceAccount]):
    model = ServiceAccount

    async def by_client_id(self, client_id: str) -> ServiceAccount | None:
        return await self.session.scalar(
            select(ServiceAccount).where(ServiceAccount.client_id == client_id)
        )

    async def page(
        self, *, limit: int, cursor: str | None
    ) -> tuple[list[ServiceAccount], str | None]:
        return await self.paginate(
            select(ServiceAccount),
            order_by=[ServiceAccount.id],
            limit=limit,
            cursor=cursor,
            descending=False,
        )


async def create_service_account(
    session: AsyncSession,
    rt: AuthRuntime,
    client_id: str,
    audiences: list[str],
    *,
    description: str,
    actor: str,
    step_up: tuple[User, StepUp, str] | None = None,
) -> tuple[ServiceAccount, str]:
    """A new account with a generated secret (returned once); 409 when the id is taken,
    also when a concurrent request took it first (the unique index decides).

    ``step_up`` (the admin's row, the step-up fields, the client IP) is checked after the
    refusals any admin could learn by listing accounts (so they spend no TOTP code) and
    before anything is written."""
    repository = ServiceAccountRepository(session)
    if client_id in RESERVED_CLIENT_IDS:
        raise ServiceAccountExists(
            f"client_id {client_id!r} is reserved for the Flightdeck service of that name "
            "(its account is made with `flightdeck-auth create-service-account` on the host)"
        )
    if await repository.by_client_id(client_id) is not None:
        raise ServiceAccountExists(f"client_id {client_id!r} is taken")
    if step_up is not None:
        admin, fields, ip = step_up
        await require_step_up(
            session, rt, admin, fields, ip=ip, purpose="creating a service account"
        )
    secret = secrets.token_urlsafe(32)
    account = ServiceAccount(
        client_id=client_id,
        secret_hash=await rt.hasher.hash(secret),
        audiences=" ".join(sorted(set(audiences))),
        description=description,
        is_active=True,
    )
    try:
        async with session.begin_nested():
            await repository.add(account)
    except IntegrityError as exc:
        raise ServiceAccountExists(f"client_id {client_id!r} is taken") from exc
    await audit(
        session,
        "service_account.created",
        actor=actor,
        subject=client_id,
        audiences=sorted(set(audiences)),
    )
    return account, secret


async def deactivate_service_account(
    session: AsyncSession, client_id: str, *, actor: str
) -> ServiceAccount:
    """Refuse new service tokens to the account (idempotent); tokens already issued live
    until they expire (minutes)."""
    account = await ServiceAccountRepository(session).by_client_id(client_id)
    if account is None:
        raise ServiceAccountNotFound(f"no service account {client_id!r}")
    if account.is_active:
        account.is_active = False
        await session.flush()
        await audit(session, "service_account.deactivated", actor=actor, subject=client_id)
    return account


async def issue_service_token(
    session: AsyncSession,
    rt: AuthRuntime,
    client_id: str,
    client_secret: str,
    scope: str | None,
    ip: str,
) -> ServiceToken:
    account = await session.scalar(
        select(ServiceAccount).where(ServiceAccount.client_id == client_id[:64])
    )
    await session.commit()  # hold no pooled connection while argon2 runs (see login)
    if account is None or not account.is_active:
        await rt.hasher.dummy_verify()
        valid = False
    else:
        valid = await rt.hasher.verify(account.secret_hash, client_secret)
    if not valid or account is None:
        await audit(session, "service_token.denied", actor=f"svc:{client_id[:64]}", ip=ip)
        count_service_token("denied")
        raise await keep_and_fail(session, InvalidClient())
    allowed = account.audiences.split()
    requested = scope.split() if scope else allowed
    if not requested or set(requested) - set(allowed):
        count_service_token("denied")
        raise InvalidScope(f"allowed audiences: {' '.join(allowed)}")
    token = await rt.issuer.service_token(account.client_id, sorted(set(requested)))
    count_service_token("issued")
    return ServiceToken(
        access_token=token.token,
        expires_in=token.expires_in,
        scope=" ".join(sorted(set(requested))),
    )


def parse_bootstrap_accounts(spec: str) -> list[tuple[str, str, list[str]]]:
    """``client:secret:aud1 aud2,client2:secret2:aud`` -> [(client, secret, [auds])]."""
    accounts = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        client_id, secret, audiences = item.split(":", 2)
        accounts.append((client_id, secret, audiences.split()))
    return accounts
