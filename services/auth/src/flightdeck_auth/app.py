"""Flightdeck Auth service: `create_app()` is the uvicorn factory."""

from pathlib import Path

from fastapi import FastAPI

from flightdeck_auth import __version__
from flightdeck_auth.router import router
from flightdeck_auth.settings import Settings, get_settings
from flightdeck_common.service_app import ServiceSpec, create_service_app

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the auth app from settings (read from the environment when not given)."""
    spec = ServiceSpec(
        title="Flightdeck Auth",
        description="Users, passwords, MFA, JWT access tokens with JWKS, refresh tokens, service accounts.",
        version=__version__,
        routers=[router],
        migrations_dir=MIGRATIONS_DIR,
    )
    return create_service_app(settings or get_settings(), spec)
