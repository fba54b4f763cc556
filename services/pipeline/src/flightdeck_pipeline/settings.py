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

    @field_validator("github_webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
