"""Settings of the auth service (env prefix `FLIGHTDECK_AUTH_`)."""

from functools import lru_cache
from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from flightdeck_common.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_AUTH_")

    service_name: ClassVar[str] = "auth"
    public_prefix: ClassVar[str] = "/auth"


@lru_cache
def get_settings() -> Settings:
    return Settings()
