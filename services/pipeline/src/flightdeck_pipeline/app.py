"""Flightdeck Pipelines service: `create_app()` is the uvicorn factory."""

from pathlib import Path

from fastapi import FastAPI

from flightdeck_common.auth.client import auth_client_lifespan
from flightdeck_common.outbox_lifespan import outbox_relay_lifespan
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import MIB
from flightdeck_pipeline import __version__
from flightdeck_pipeline.deployments.router import router as deployments_router
from flightdeck_pipeline.events.lifespan import make_events_lifespan
from flightdeck_pipeline.events.router import router as events_router
from flightdeck_pipeline.lifespan import pipeline_lifespan
from flightdeck_pipeline.metrics.router import router as metrics_router
from flightdeck_pipeline.outbox import OutboxEvent
from flightdeck_pipeline.runs.router import router as runs_router
from flightdeck_pipeline.settings import Settings, get_settings
from flightdeck_pipeline.webhooks.deliveries_router import router as deliveries_router
from flightdeck_pipeline.webhooks.router import router as webhooks_router

WEBHOOK_RECEIVER = "/pipelines/webhooks/github"
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
OPENAPI_TAGS = [
    {"name": "runs", "description": "Pipeline runs, their jobs and log lines."},
    {
        "name": "deployments",
        "description": "Deployments and incidents reported by systems other than GitHub.",
    },
    {"name": "metrics", "description": "Run statistics, daily history and DORA metrics."},
    {"name": "events", "description": "Live stream of run and deployment changes (SSE)."},
    {
        "name": "webhooks",
        "description": (
            "The GitHub webhook receiver (HMAC-signed deliveries, stored and answered, mapped "
            "behind the answer) and the stored deliveries: results, errors, reprocessing."
        ),
    },
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the pipeline app from settings (read from the environment when not given)."""
    settings = settings or get_settings()
    spec = ServiceSpec(
        title="Flightdeck Pipelines",
        description=(
            "Pipeline runs, jobs and logs from GitHub Actions webhooks; stats, history, "
            "DORA metrics and a live event stream."
        ),
        version=__version__,
        # Fixed paths (/pipelines/stats, /pipelines/logs, ...) before /pipelines/{run_pk}.
        routers=[
            webhooks_router,
            deliveries_router,
            metrics_router,
            events_router,
            deployments_router,
            runs_router,
        ],
        migrations_dir=MIGRATIONS_DIR,
        lifespan_hooks=[
            auth_client_lifespan,
            make_events_lifespan(),
            pipeline_lifespan,
            outbox_relay_lifespan(OutboxEvent),
        ],
        openapi_tags=OPENAPI_TAGS,
        # The receiver only (the deliveries API keeps the defaults): GitHub's 25 MB bodies,
        # measured by the receiver itself once the signature is verified, in a
        # concurrency group of their own.
        body_limit_overrides={WEBHOOK_RECEIVER: 25 * MIB},
        json_depth_overrides={WEBHOOK_RECEIVER: None},
        concurrency_limit_overrides={WEBHOOK_RECEIVER: settings.webhook_max_concurrent_deliveries},
    )
    return create_service_app(settings, spec)
