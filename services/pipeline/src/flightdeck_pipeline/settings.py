"""Settings of the pipeline service (env prefix `FLIGHTDECK_PIPELINE_`)."""

from functools import lru_cache
from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from flightdeck_common.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_PIPELINE_")

    service_name: ClassVar[str] = "pipeline"
    public_prefix: ClassVar[str] = "/pipelines"
    required_secrets: ClassVar[tuple[str, ...]] = (
        "github_webhook_secrets",
        "service_client_secret",
    )

    # Comma-separated; any of them may sign a delivery, the first is the current one.
    github_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Environments counted as production for DORA (besides GitHub's production_environment flag).
    production_environments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["production", "prod"]
    )
    # Issues with this label are incidents (opened/closed).
    incident_label: str = "incident"
    # Live events: heartbeat interval and how many past events a reconnect can replay.
    sse_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    sse_replay_limit: int = Field(1000, ge=1, le=100_000)
    # Stats/history/DORA answers are cached this long (and dropped on every write).
    metrics_cache_ttl_seconds: int = Field(60, ge=0, le=3600)
    # Deliveries are kept (for dedupe and reprocessing) at least this long.
    delivery_retention_days: int = Field(7, ge=7, le=365)

    @field_validator("production_environments", mode="before")
    @classmethod
    def _split_environments(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("github_webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
