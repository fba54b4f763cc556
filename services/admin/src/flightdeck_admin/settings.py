"""Settings of the admin service (env prefix `FLIGHTDECK_ADMIN_`)."""

from functools import lru_cache
from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from flightdeck_common.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_ADMIN_")

    service_name: ClassVar[str] = "admin"
    public_prefix: ClassVar[str] = "/admin"
    required_secrets: ClassVar[tuple[str, ...]] = ("service_client_secret",)


@lru_cache
def get_settings() -> Settings:
    return Settings()
