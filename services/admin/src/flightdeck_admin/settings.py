"""Settings of the admin service (env prefix `FLIGHTDECK_ADMIN_`)."""

from functools import lru_cache
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from flightdeck_common.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_ADMIN_")

    service_name: ClassVar[str] = "admin"
    public_prefix: ClassVar[str] = "/admin"
    required_secrets: ClassVar[tuple[str, ...]] = ("service_client_secret",)

    # Registration requests are public: a strict limit per client IP.
    rate_limit_registration: str = "5/hour"
    # Registration passwords are hashed here and handed to auth as hashes, so the pepper
    # must be auth's (FLIGHTDECK_AUTH_PASSWORD_PEPPER); unset when auth has none.
    password_pepper: SecretStr | None = None
    # A signed review decision is accepted when its signed_at is this close to our clock.
    approval_max_skew_seconds: int = Field(300, ge=10, le=3600)
    # An approval that creates the account holds the request this long at most; a claim
    # older than that was abandoned (the process died) and another approval may take it.
    approval_claim_timeout_seconds: int = Field(120, ge=10, le=3600)


@lru_cache
def get_settings() -> Settings:
    return Settings()
