"""Every table of the pipeline service (imported so alembic sees the whole metadata)."""

from flightdeck_pipeline.deployments.models import Change, Deployment, DeploymentStatus, Incident
from flightdeck_pipeline.events.models import ChangeEvent
from flightdeck_pipeline.outbox import OutboxEvent
from flightdeck_pipeline.runs.models import (
    Job,
    LogLine,
    Run,
    RunDurationRollup,
    RunDurationRollupAll,
    RunRollup,
    RunRollupAll,
)
from flightdeck_pipeline.webhooks.models import Delivery

__all__ = [
    "Change",
    "ChangeEvent",
    "Delivery",
    "Deployment",
    "DeploymentStatus",
    "Incident",
    "Job",
    "LogLine",
    "OutboxEvent",
    "Run",
    "RunDurationRollup",
    "RunDurationRollupAll",
    "RunRollup",
    "RunRollupAll",
]
