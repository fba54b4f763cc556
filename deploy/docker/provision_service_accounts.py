"""Compose one-shot: create (or re-key) the service accounts of pipeline and admin in auth.

Why a script: in production auth ignores ``FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS`` at
start (that bootstrap is development-only), and ``flightdeck-auth create-service-account``
generates a secret and prints it once, which compose cannot hand to the other services.
This applies the same spec, ``client_id:secret:aud1 aud2,client_id:...``, with the secrets
the operator put in ``.env``, through auth's own service-account code (argon2id hash,
audience checks, audit event). It is idempotent: an account whose secret already matches
keeps its hash; its audiences are set again. Secrets are never printed.

Runs in the auth image with auth's settings (production rules apply: it needs
``FLIGHTDECK_AUTH_SECRET_KEY`` like the service), after ``flightdeck-auth migrate``:

    python /opt/flightdeck/provision_service_accounts.py
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import ValidationError

from flightdeck_auth.bootstrap import build_runtime
from flightdeck_auth.service_accounts.service import (
    parse_bootstrap_accounts,
    upsert_service_account,
)
from flightdeck_auth.settings import Settings
from flightdeck_common.db import create_engine, create_sessionmaker, session_scope
from flightdeck_common.errors import FlightdeckError
from flightdeck_common.rate_limit import RateLimiter
from flightdeck_common.resources import Resources
from flightdeck_common.settings import MIN_SECRET_LENGTH, WEAK_SECRETS

SPEC_ENV = "FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS"


def _accounts(settings: Settings) -> list[tuple[str, str, list[str]]]:
    spec = settings.bootstrap_service_accounts
    accounts = parse_bootstrap_accounts(spec.get_secret_value()) if spec else []
    if not accounts:
        raise ValueError(f"{SPEC_ENV} is empty: nothing to provision")
    for client_id, secret, _ in accounts:
        # The same rule the services apply to their own copy of the secret at start.
        if secret.lower() in WEAK_SECRETS or len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"the secret of service account {client_id!r} must be at least "
                f"{MIN_SECRET_LENGTH} characters and not a placeholder"
            )
    return accounts


async def provision(settings: Settings) -> list[str]:
    """Save every account of the spec in one transaction; return the client ids."""
    accounts = _accounts(settings)
    engine = create_engine(settings)
    try:
        resources = Resources(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            rate_limiter=RateLimiter(None, {}),
        )
        runtime = build_runtime(settings, resources)
        async with session_scope(resources.sessionmaker) as session:
            for client_id, secret, audiences in accounts:
                await upsert_service_account(
                    session,
                    runtime,
                    client_id,
                    audiences,
                    secret=secret,
                    description="provisioned by docker compose",
                )
                print(f"service account {client_id}: saved ({' '.join(sorted(audiences))})")
    finally:
        await engine.dispose()
    return [client_id for client_id, _, _ in accounts]


def main() -> int:
    try:
        settings = Settings()
        asyncio.run(provision(settings))
    except (ValidationError, ValueError) as exc:
        print(f"provision-service-accounts: {exc}", file=sys.stderr)
        return 2
    except FlightdeckError as exc:
        print(f"provision-service-accounts: {exc.title}: {exc.detail or ''}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
