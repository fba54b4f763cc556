"""The lifespan hook that runs a service's outbox relay (see :mod:`outbox_relay`).

Every service maps an ``outbox`` table; this hook starts an :class:`OutboxRelay` over it
when the service starts and stops it (with one last bounded delivery) when it stops. The
relay is kept on ``app.state.outbox_relay``.

Where the events go is the ``make_sender`` argument. The default, for pipeline and any
other service with its own client credentials, POSTs batches to the admin service's
``/admin/internal/audit-events`` with a service token for ``flightdeck:admin-internal``.
Auth mints that token itself; admin appends to its chain in process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import httpx
from fastapi import FastAPI

from flightdeck_common.auth.claims import ADMIN_INTERNAL_AUDIENCE
from flightdeck_common.auth.service_tokens import (
    SERVICE_TOKEN_PATH,
    ServiceTokenProvider,
    TokenProvider,
)
from flightdeck_common.outbox import OutboxEventMixin
from flightdeck_common.outbox_relay import OutboxRelay, Sender, http_sender
from flightdeck_common.resources import Resources
from flightdeck_common.service_app import LifespanHook

logger = logging.getLogger(__name__)

AUDIT_INGEST_PATH = "/admin/internal/audit-events"
# Tests hand the hook a transport (e.g. httpx.ASGITransport to an in-process admin app).
ADMIN_TRANSPORT_KEY = "admin_transport"

SenderFactory = Callable[[FastAPI, Resources, httpx.AsyncClient], Sender | None]
TokenProviderFactory = Callable[[FastAPI, Resources, httpx.AsyncClient], TokenProvider | None]


def client_credentials_tokens(
    app: FastAPI, resources: Resources, http: httpx.AsyncClient
) -> TokenProvider | None:
    """Tokens for the admin audience from this service's own client credentials."""
    settings = resources.settings
    if not (settings.service_client_id and settings.service_client_secret):
        return None
    return ServiceTokenProvider(
        f"{settings.auth_url.rstrip('/')}{SERVICE_TOKEN_PATH}",
        settings.service_client_id,
        settings.service_client_secret,
        [ADMIN_INTERNAL_AUDIENCE],
        http,
    )


def admin_http_sender(tokens: TokenProviderFactory = client_credentials_tokens) -> SenderFactory:
    """A sender factory posting to the admin service with tokens from ``tokens``."""

    def make(app: FastAPI, resources: Resources, http: httpx.AsyncClient) -> Sender | None:
        provider = tokens(app, resources, http)
        if provider is None:
            return None
        url = f"{resources.settings.admin_url.rstrip('/')}{AUDIT_INGEST_PATH}"
        return http_sender(http, url, provider)

    return make


def outbox_relay_lifespan(
    model: type[OutboxEventMixin], make_sender: SenderFactory | None = None
) -> LifespanHook:
    """A lifespan hook running the relay of ``model``'s table for this service."""
    factory = make_sender or admin_http_sender()

    @contextlib.asynccontextmanager
    async def hook(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
        settings = resources.settings
        app.state.outbox_relay = None
        transport = resources.extras.get(ADMIN_TRANSPORT_KEY)
        async with httpx.AsyncClient(timeout=10.0, transport=transport, trust_env=False) as http:
            send = factory(app, resources, http) if settings.outbox_relay_enabled else None
            if send is None:
                if settings.outbox_relay_enabled:
                    logger.warning(
                        "%s has no service credentials: audit events stay in its outbox "
                        "until it gets FLIGHTDECK_%s_SERVICE_CLIENT_ID/SECRET",
                        settings.service_name,
                        settings.service_name.upper(),
                    )
                yield
                return
            relay = OutboxRelay(
                resources.sessionmaker,
                model,
                send,
                service=settings.service_name,
                batch_size=settings.outbox_batch_size,
                interval=settings.outbox_interval_seconds,
                max_backoff=settings.outbox_max_backoff_seconds,
                stop_timeout=settings.outbox_stop_timeout_seconds,
            )
            app.state.outbox_relay = relay
            relay.start()
            try:
                yield
            finally:
                await relay.stop(flush=True)

    return hook
