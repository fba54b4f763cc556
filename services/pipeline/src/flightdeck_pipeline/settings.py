"""Settings of the pipeline service (env prefix `FLIGHTDECK_PIPELINE_`)."""

from functools import lru_cache
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flightdeck_common.settings import CommaSeparated, CommaSeparatedSecrets, CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_PIPELINE_")

    service_name: ClassVar[str] = "pipeline"
    public_prefix: ClassVar[str] = "/pipelines"
    required_secrets: ClassVar[tuple[str, ...]] = (
        "github_webhook_secrets",
        "service_client_secret",
    )

    # Comma-separated; any of them may sign a delivery, the first is the current one.
    github_webhook_secrets: CommaSeparatedSecrets = Field(default_factory=list)

    # Environments counted as production for DORA (besides GitHub's production_environment flag).
    production_environments: CommaSeparated = Field(default_factory=lambda: ["production", "prod"])
    # Issues with this label are incidents (opened/closed).
    incident_label: str = "incident"
    # Live events: heartbeat interval and how many past events a reconnect can replay.
    sse_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    sse_replay_limit: int = Field(1000, ge=1, le=100_000)
    # Stats/history/DORA answers are cached this long (and dropped when what they read is
    # written: runs for stats and history; deployments, commits, incidents for DORA).
    metrics_cache_ttl_seconds: int = Field(60, ge=0, le=3600)
    # Stats/history/DORA answers one process computes at once; more requests wait their
    # turn (and then find the answer cached): PostgreSQL is not swamped by a burst.
    metrics_max_concurrent_computations: int = Field(4, ge=1, le=64)
    # Webhook deliveries one process works on at once (their own group, apart from the
    # API's max_concurrent_requests); more get 503 `overloaded`, and GitHub can redeliver.
    webhook_max_concurrent_deliveries: int = Field(16, ge=0, le=1000)
    # JSON nesting accepted in a webhook payload (GitHub's are about 10 deep), checked once
    # the signature is verified; deeper ones get 400 `json_too_deep`.
    webhook_max_json_depth: int = Field(128, ge=16, le=512)
    # Deliveries are kept (for dedupe and reprocessing) at least this long.
    delivery_retention_days: int = Field(7, ge=7, le=365)


@lru_cache
def get_settings() -> Settings:
    return Settings()
