"""Settings base shared by every service.

Each service subclasses :class:`CommonSettings` with its own env prefix
(``FLIGHTDECK_AUTH_`` ...). Keys shared by all services (``ENVIRONMENT``,
``REDIS_URL``, ``SENTRY_DSN``) are read without prefix.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flightdeck_common.client_addresses import parse_trusted_proxies, trusts_every_peer

MIB = 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_HEADER_READ_TIMEOUT = 15.0

# Values that must never be accepted as a secret in production.
WEAK_SECRETS = frozenset(
    {
        "",
        "admin",
        "changeme",
        "change-me",
        "default",
        "password",
        "secret",
        "test",
        "development",
        "dev",
        "flightdeck",
        "replace-me",
        "xxx",
    }
)
MIN_SECRET_LENGTH = 32


def split_commas(value: Any) -> Any:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; other values pass through unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A list read from the environment as comma-separated values (not JSON).
CommaSeparated = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
CommaSeparatedSecrets = Annotated[list[SecretStr], NoDecode, BeforeValidator(split_commas)]


# OWASP Password Storage Cheat Sheet: argon2id with at least 19 MiB and 2 iterations.
PRODUCTION_MIN_HASH_TIME_COST = 2
PRODUCTION_MIN_HASH_MEMORY_KIB = 19456


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class InsecureSettingsError(ValueError):
    """Raised at startup when production settings lack or weaken a secret."""


def _shared(name: str) -> Any:
    return AliasChoices(name, name.lower())


class CommonSettings(BaseSettings):
    """Configuration every Flightdeck service understands.

    Subclasses set ``service_name``, ``public_prefix`` and ``model_config`` with
    their env prefix, and list their secret fields in ``required_secrets``: in
    production each must be set, at least 32 characters long and not a
    well-known placeholder, or the service refuses to start.
    """

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, validate_default=True
    )

    service_name: ClassVar[str] = "service"
    public_prefix: ClassVar[str] = "/service"
    required_secrets: ClassVar[tuple[str, ...]] = ()
    # The audiences of auth's internal API this service asks its service token for: only
    # what it calls (the revocation feed; admin adds user administration).
    auth_audiences: ClassVar[tuple[str, ...]] = ("flightdeck:auth-revocations",)

    environment: Environment = Field(
        Environment.DEVELOPMENT, validation_alias=_shared("ENVIRONMENT")
    )
    redis_url: str | None = Field(None, validation_alias=_shared("REDIS_URL"))
    sentry_dsn: SecretStr | None = Field(None, validation_alias=_shared("SENTRY_DSN"))
    sentry_traces_sample_rate: float = Field(
        0.0, ge=0.0, le=1.0, validation_alias=_shared("SENTRY_TRACES_SAMPLE_RATE")
    )
    auth_url: str = Field(
        "http://127.0.0.1:8101",
        validation_alias=_shared("AUTH_URL"),
        description="Base URL of the auth service (JWKS, service tokens, revocation feed).",
    )
    admin_url: str = Field(
        "http://127.0.0.1:8103",
        validation_alias=_shared("ADMIN_URL"),
        description="Base URL of the admin service (where outbox relays deliver audit events).",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        validation_alias=_shared("FORWARDED_ALLOW_IPS"),
        description=(
            "Comma-separated addresses or CIDR networks of the ingress whose X-Forwarded-For "
            "names the client (`serve`); others are the client themselves. `*` (any peer) "
            "is refused in production."
        ),
    )
    jwt_issuer: str = Field("flightdeck-auth", validation_alias=_shared("JWT_ISSUER"))
    log_level: str = Field("INFO", validation_alias=_shared("LOG_LEVEL"))
    log_json: bool = Field(True, validation_alias=_shared("LOG_JSON"))

    # Database ("" means the embedded default: sqlite file under var/).
    database_url: str = ""
    database_pool_size: int = Field(10, ge=1, le=200)
    database_max_overflow: int = Field(10, ge=0, le=200)
    database_pool_timeout_seconds: float = Field(5.0, gt=0)
    database_connect_timeout_seconds: float = Field(5.0, gt=0)
    database_statement_timeout_seconds: float = Field(15.0, gt=0)
    database_echo: bool = False
    # Apply migrations at startup; None means: yes in development, no in production.
    migrate_on_start: bool | None = None

    # HTTP limits and policies (README: Input limits).
    max_body_bytes: int = Field(1 * MIB, ge=1024)
    # Nesting of a JSON request body (arrays and objects); deeper bodies get 400 json_too_deep.
    max_json_depth: int = Field(DEFAULT_MAX_JSON_DEPTH, ge=2, le=512)
    # Longest wait for the next piece of a request body before answering 408.
    body_read_timeout_seconds: float = Field(15.0, gt=0, le=600)
    # Request line plus headers (431 above) and how long they may take to arrive (served by
    # `flightdeck-<service> serve`; see flightdeck_common.http_server).
    max_header_bytes: int = Field(DEFAULT_MAX_HEADER_BYTES, ge=4096, le=1 * MIB)
    header_read_timeout_seconds: float = Field(DEFAULT_HEADER_READ_TIMEOUT, gt=0, le=600)
    cors_allow_origins: list[str] = Field(default_factory=list)
    hsts_max_age_seconds: int = Field(63072000, ge=0)
    readiness_timeout_seconds: float = Field(2.0, gt=0)
    # After a stop signal, /readyz answers 503 this long before the server stops
    # accepting connections (longer than the load balancer's health-check interval).
    shutdown_drain_seconds: float = Field(0.0, ge=0, le=120)
    # Requests one process works on at once (probes, /metrics and event streams excluded);
    # more get 503 `overloaded` with Retry-After at once instead of queueing (0: no cap).
    max_concurrent_requests: int = Field(100, ge=0, le=10_000)

    # This service's own account for service-to-service calls (client credentials).
    service_client_id: str | None = None
    service_client_secret: SecretStr | None = None
    # Without Redis, how often the auth revocation feed is followed.
    revocation_sync_seconds: float = Field(3.0, gt=0, le=60)

    # Outbox relay: delivery of this service's audit events to the admin service.
    outbox_relay_enabled: bool = True
    outbox_batch_size: int = Field(200, ge=1, le=500)
    outbox_interval_seconds: float = Field(1.0, gt=0, le=60)
    outbox_max_backoff_seconds: float = Field(30.0, ge=1, le=3600)
    outbox_stop_timeout_seconds: float = Field(5.0, gt=0, le=60)

    # Rate limits ("N/period", see the `limits` package notation), per client address.
    # Auth's: default on every /auth/me* route, logout and the service-account
    # administration (never probes, /metrics, the JWKS or internal routes); login on
    # /auth/login and /auth/login/mfa. Pipeline and admin use neither.
    rate_limit_default: str = "600/minute"
    rate_limit_login: str = "10/minute"

    # argon2id cost of new password hashes (auth, and admin's registration requests):
    # OWASP's recommended 19 MiB and 2 passes by default; a login rehashes a password made
    # with other parameters. Production refuses less than that minimum.
    password_hash_time_cost: int = Field(2, ge=1, le=20)
    password_hash_memory_kib: int = Field(19456, ge=1024, le=1048576)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _trusted_proxy_addresses(cls, value: str) -> str:
        return ",".join(parse_trusted_proxies(value))

    @model_validator(mode="after")
    def _defaults_and_production_rules(self) -> CommonSettings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///var/{self.service_name}.db"
        if self.migrate_on_start is None:
            self.migrate_on_start = self.environment is Environment.DEVELOPMENT
        if self.environment is Environment.PRODUCTION:
            problems = self.production_problems()
            if problems:
                raise InsecureSettingsError(
                    "refusing to start in production: " + "; ".join(problems)
                )
        return self

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def env_prefix(self) -> str:
        return str(self.model_config.get("env_prefix", ""))

    def production_problems(self) -> list[str]:
        """List what makes these settings unsafe for production (empty when fine)."""
        problems: list[str] = []
        if (
            self.password_hash_time_cost < PRODUCTION_MIN_HASH_TIME_COST
            or self.password_hash_memory_kib < PRODUCTION_MIN_HASH_MEMORY_KIB
        ):
            prefix = self.env_prefix.upper()
            problems.append(
                f"{prefix}PASSWORD_HASH_TIME_COST must be at least "
                f"{PRODUCTION_MIN_HASH_TIME_COST} and {prefix}PASSWORD_HASH_MEMORY_KIB at least "
                f"{PRODUCTION_MIN_HASH_MEMORY_KIB} (OWASP's argon2id minimum)"
            )
        if trusts_every_peer(self.forwarded_allow_ips):
            problems.append(
                "FORWARDED_ALLOW_IPS must name the ingress's addresses, not '*' (any client "
                "could then choose its own address for rate limits and logs)"
            )
        for name in self.required_secrets:
            env_name = f"{self.env_prefix}{name}".upper()
            for value in _secret_values(getattr(self, name, None)):
                if value is None or value.strip() == "":
                    problems.append(f"{env_name} is required")
                elif value.strip().lower() in WEAK_SECRETS:
                    problems.append(f"{env_name} is a well-known placeholder")
                elif len(value.strip()) < MIN_SECRET_LENGTH:
                    problems.append(f"{env_name} must be at least {MIN_SECRET_LENGTH} characters")
        return problems


def _secret_values(value: Any) -> list[str | None]:
    if value is None:
        return [None]
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, list | tuple):
        return [item for v in value for item in _secret_values(v)] or [None]
    return [str(value)]
