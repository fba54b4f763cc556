"""Flightdeck Auth service: `create_app()` is the uvicorn factory."""

from pathlib import Path

from fastapi import FastAPI

from flightdeck_auth import __version__
from flightdeck_auth.bootstrap import auth_lifespan
from flightdeck_auth.internal.router import router as internal_router
from flightdeck_auth.login.router import router as login_router
from flightdeck_auth.outbox import OutboxEvent
from flightdeck_auth.service_accounts.router import router as service_accounts_router
from flightdeck_auth.settings import Settings, get_settings
from flightdeck_auth.tokens.own_tokens import own_admin_tokens
from flightdeck_auth.tokens.router import router as tokens_router
from flightdeck_auth.users.router import router as me_router
from flightdeck_common.outbox_lifespan import admin_http_sender, outbox_relay_lifespan
from flightdeck_common.service_app import ServiceSpec, create_service_app

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
OPENAPI_TAGS = [
    {"name": "login", "description": "Log in (with TOTP when enrolled), refresh, log out."},
    {"name": "me", "description": "The signed-in user: profile, password, TOTP, approval key."},
    {"name": "tokens", "description": "Public keys (JWKS) that verify access tokens."},
    {
        "name": "service accounts",
        "description": "Service tokens for machines (OAuth2 client credentials).",
    },
    {
        "name": "internal",
        "description": "For the other Flightdeck services only (service tokens); not routed publicly.",
    },
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the auth app from settings (read from the environment when not given)."""
    spec = ServiceSpec(
        title="Flightdeck Auth",
        description=(
            "Users, passwords, MFA, JWT access tokens with JWKS, refresh tokens, service accounts."
        ),
        version=__version__,
        routers=[login_router, me_router, tokens_router, service_accounts_router, internal_router],
        migrations_dir=MIGRATIONS_DIR,
        lifespan_hooks=[
            auth_lifespan,
            outbox_relay_lifespan(OutboxEvent, admin_http_sender(own_admin_tokens)),
        ],
        openapi_tags=OPENAPI_TAGS,
        quiet_paths=frozenset({"/auth/internal/revocations", "/auth/.well-known/jwks.json"}),
    )
    return create_service_app(settings or get_settings(), spec)
