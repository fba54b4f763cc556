"""Settings of the auth service (env prefix `FLIGHTDECK_AUTH_`)."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from flightdeck_common.settings import (
    CommaSeparated,
    CommaSeparatedSecrets,
    CommonSettings,
    Environment,
)

USER_AUDIENCE = "flightdeck"
# What a service account may be given, one audience per capability: auth's revocation feed,
# auth's user administration, admin's audit intake.
INTERNAL_AUDIENCES = (
    "flightdeck:auth-revocations",
    "flightdeck:auth-users",
    "flightdeck:admin-internal",
)


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_AUTH_")

    service_name: ClassVar[str] = "auth"
    public_prefix: ClassVar[str] = "/auth"
    required_secrets: ClassVar[tuple[str, ...]] = ("secret_key",)

    # Encrypts TOTP secrets and signing keys at rest. Required in production; in
    # development without it they are stored unencrypted (and a warning is logged).
    secret_key: SecretStr | None = None
    # Comma-separated keys that SECRET_KEY replaced: values sealed under them still open
    # (and are re-sealed under SECRET_KEY at startup and by `rotate-keys`). Drop one once
    # a start has logged that nothing is sealed under it any more.
    previous_secret_keys: CommaSeparatedSecrets = Field(default_factory=list)
    password_pepper: SecretStr | None = None

    access_token_ttl_seconds: int = Field(900, ge=60, le=3600)
    refresh_token_ttl_seconds: int = Field(30 * 86400, ge=3600)
    # Absolute lifetime of a refresh-token family (one login): refreshing never extends a
    # session past this many seconds after the login that started it.
    refresh_family_max_age_seconds: int = Field(30 * 86400, ge=3600)
    service_token_ttl_seconds: int = Field(600, ge=60, le=3600)
    mfa_token_ttl_seconds: int = Field(300, ge=30, le=900)
    mfa_max_attempts: int = Field(5, ge=1, le=20)
    admin_approval_max_age_seconds: int = Field(
        900,
        ge=60,
        le=3600,
        description=(
            "Creating an admin through the internal API needs a signed approval at most this "
            "old (admin itself accepts a decision within 5 minutes of signing)."
        ),
    )
    # Roles that must enrol TOTP before their tokens reach anything but /auth/me*.
    # Default: none in development, admin in production.
    mfa_required_roles: CommaSeparated | None = None

    # Failed logins: per username and per client IP, exponential lock.
    login_max_failures_per_user: int = Field(5, ge=1)
    login_max_failures_per_ip: int = Field(20, ge=1)
    login_failure_window_seconds: int = Field(900, ge=10)
    login_base_lock_seconds: int = Field(30, ge=1)
    login_max_lock_seconds: int = Field(900, ge=1)

    rate_limit_refresh: str = "60/minute"
    rate_limit_service_token: str = "60/minute"  # noqa: S105

    # Login risk policy (see flightdeck_auth.security.risk): hours are UTC.
    risk_challenge_at: int = 40
    risk_deny_at: int = 80
    risk_off_hours_start: int = Field(22, ge=0, le=23)
    risk_off_hours_end: int = Field(6, ge=0, le=23)

    # Development bootstrap: the first admin (password generated and printed once when unset).
    bootstrap_admin_username: str = "admin"
    bootstrap_admin_password: SecretStr | None = None
    # Development bootstrap of service accounts: "client_id:secret:aud1 aud2,client2:...".
    bootstrap_service_accounts: SecretStr | None = None

    @model_validator(mode="after")
    def _role_defaults(self) -> Settings:
        if self.mfa_required_roles is None:
            production = self.environment is Environment.PRODUCTION
            self.mfa_required_roles = ["admin"] if production else []
        unknown = set(self.mfa_required_roles) - {"viewer", "operator", "admin"}
        if unknown:
            raise ValueError(f"unknown roles in MFA_REQUIRED_ROLES: {sorted(unknown)}")
        return self

    @model_validator(mode="after")
    def _previous_keys_need_a_key(self) -> Settings:
        if self.previous_secret_keys and self.secret_key is None:
            raise ValueError("PREVIOUS_SECRET_KEYS needs SECRET_KEY (the key that seals now)")
        return self

    @property
    def secret_box_keys(self) -> list[str]:
        """The secret box's keys: SECRET_KEY seals, every one opens (empty: no encryption)."""
        if self.secret_key is None:
            return []
        previous = [key.get_secret_value() for key in self.previous_secret_keys]
        return [self.secret_key.get_secret_value(), *previous]

    @property
    def limited_roles(self) -> frozenset[str]:
        return frozenset(self.mfa_required_roles or ())


@lru_cache
def get_settings() -> Settings:
    return Settings()
