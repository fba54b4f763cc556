"""Flightdeck Admin service: `create_app()` is the uvicorn factory."""

from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from flightdeck_admin import __version__
from flightdeck_admin.audit.head import audit_head_lifespan
from flightdeck_admin.audit.local_relay import admin_outbox_lifespan
from flightdeck_admin.audit.router import internal_router as audit_internal_router
from flightdeck_admin.audit.router import router as audit_router
from flightdeck_admin.audit.schemas import MAX_BATCH_JSON_DEPTH
from flightdeck_admin.registrations.dependencies import password_hasher_lifespan
from flightdeck_admin.registrations.router import router as registrations_router
from flightdeck_admin.settings import Settings, get_settings
from flightdeck_admin.users.router import router as users_router
from flightdeck_common.auth.client import auth_client_lifespan
from flightdeck_common.service_app import LifespanHook, ServiceSpec, create_service_app

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
OPENAPI_TAGS = [
    {
        "name": "registrations",
        "description": "Account requests, filed by anyone and decided by admins with a signature.",
    },
    {"name": "users", "description": "User administration (held by the auth service)."},
    {"name": "audit", "description": "The hash-chained audit log: list, verify, live stream."},
    {"name": "policy", "description": "Login policy and approval decisions from the audit log."},
    {
        "name": "internal",
        "description": "For the other Flightdeck services only (service tokens); not routed publicly.",
    },
]


def create_app(
    settings: Settings | None = None, *, first_lifespan_hooks: Sequence[LifespanHook] = ()
) -> FastAPI:
    """Build the admin app from settings (read from the environment when not given).

    ``first_lifespan_hooks`` run before the others; tests use one to hand the auth client
    an in-process transport to a real auth app.
    """
    spec = ServiceSpec(
        title="Flightdeck Admin",
        description="Onboarding approvals, user administration and the tamper-evident audit log.",
        version=__version__,
        routers=[registrations_router, users_router, audit_router, audit_internal_router],
        migrations_dir=MIGRATIONS_DIR,
        openapi_tags=OPENAPI_TAGS,
        # An ingest batch wraps each event's data (up to MAX_DATA_DEPTH deep) in 3 levels.
        json_depth_overrides={"/admin/internal/audit-events": MAX_BATCH_JSON_DEPTH},
        lifespan_hooks=[
            *first_lifespan_hooks,
            auth_client_lifespan,
            password_hasher_lifespan,
            audit_head_lifespan,  # before the relay: it loads the chain key
            admin_outbox_lifespan(),
        ],
    )
    return create_service_app(settings or get_settings(), spec)
