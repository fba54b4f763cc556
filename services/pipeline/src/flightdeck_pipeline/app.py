"""Flightdeck Pipelines service: `create_app()` is the uvicorn factory."""

from pathlib import Path

from fastapi import FastAPI

from flightdeck_common.auth.client import auth_client_lifespan
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import MIB
from flightdeck_pipeline import __version__
from flightdeck_pipeline.router import router
from flightdeck_pipeline.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the pipeline app from settings (read from the environment when not given)."""
    spec = ServiceSpec(
        title="Flightdeck Pipelines",
        description="Pipeline runs, jobs and logs from GitHub Actions webhooks; stats, history, DORA metrics and a live event stream.",
        version=__version__,
        routers=[router],
        migrations_dir=MIGRATIONS_DIR,
        lifespan_hooks=[auth_client_lifespan],
        body_limit_overrides={"/pipelines/webhooks/": 25 * MIB},
    )
    return create_service_app(settings or get_settings(), spec)
