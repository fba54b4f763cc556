"""CommonSettings: env prefixes, shared keys, defaults and the production secret rules."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from flightdeck_common.settings import (
    MIN_SECRET_LENGTH,
    CommonSettings,
    Environment,
    InsecureSettingsError,
)

STRONG = "k" * MIN_SECRET_LENGTH
STRONG_2 = "q7!" * 12


class ThingsSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_TEST_")
    service_name: ClassVar[str] = "test"
    public_prefix: ClassVar[str] = "/things"


class OtherSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_OTHER_")
    service_name: ClassVar[str] = "other"
    public_prefix: ClassVar[str] = "/other"


class SecretSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_SEC_")
    service_name: ClassVar[str] = "sec"
    public_prefix: ClassVar[str] = "/sec"
    required_secrets: ClassVar[tuple[str, ...]] = ("signing_key", "webhook_secrets")

    signing_key: SecretStr | None = None
    webhook_secrets: list[SecretStr] = []


def things(**kwargs: Any) -> ThingsSettings:
    return ThingsSettings(_env_file=None, **kwargs)


def secret_settings(**kwargs: Any) -> SecretSettings:
    return SecretSettings(_env_file=None, **kwargs)


def production_error(**kwargs: Any) -> str:
    with pytest.raises(ValidationError) as excinfo:
        secret_settings(environment="production", **kwargs)
    errors = excinfo.value.errors()
    assert len(errors) == 1
    # The validator's own exception type survives inside pydantic's ValidationError.
    assert isinstance(errors[0]["ctx"]["error"], InsecureSettingsError)
    return str(errors[0]["ctx"]["error"])


# --- prefixes and shared keys ------------------------------------------------------------


def test_env_prefix_selects_this_services_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHTDECK_TEST_DATABASE_URL", "postgresql+asyncpg://u@db/things")
    monkeypatch.setenv("FLIGHTDECK_TEST_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("FLIGHTDECK_OTHER_MAX_BODY_BYTES", "8192")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@db/unprefixed")

    settings = things()
    other = OtherSettings(_env_file=None)

    assert settings.env_prefix == "FLIGHTDECK_TEST_"
    assert settings.database_url == "postgresql+asyncpg://u@db/things"
    assert settings.max_body_bytes == 4096
    assert other.max_body_bytes == 8192
    assert other.database_url == "sqlite+aiosqlite:///var/other.db"


def test_prefixed_variables_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("flightdeck_test_rate_limit_login", "3/minute")
    assert things().rate_limit_login == "3/minute"


def test_shared_keys_are_read_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("SENTRY_DSN", "https://key@sentry.example/1")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")

    for settings in (things(), OtherSettings(_env_file=None)):
        assert settings.environment is Environment.PRODUCTION
        assert settings.is_production
        assert settings.redis_url == "redis://cache:6379/2"
        assert settings.sentry_dsn is not None
        assert settings.sentry_dsn.get_secret_value() == "https://key@sentry.example/1"
        assert settings.log_level == "DEBUG"


def test_shared_keys_accept_field_names_in_code() -> None:
    settings = things(environment="production", redis_url="redis://r/0")
    assert settings.environment is Environment.PRODUCTION
    assert settings.redis_url == "redis://r/0"


def test_sentry_dsn_is_not_revealed_by_repr() -> None:
    settings = things(sentry_dsn="https://very-private-key@sentry.example/1")
    assert "very-private-key" not in repr(settings)
    assert "very-private-key" not in str(settings.model_dump())


def test_unknown_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "staging")
    with pytest.raises(ValidationError, match=r"environment|ENVIRONMENT"):
        things()


def test_defaults() -> None:
    settings = things()
    assert settings.environment is Environment.DEVELOPMENT
    assert not settings.is_production
    assert settings.redis_url is None
    assert settings.sentry_dsn is None
    assert settings.cors_allow_origins == []


# --- database url and migrate_on_start -------------------------------------------------


@pytest.mark.parametrize("settings_class", [ThingsSettings, OtherSettings, SecretSettings])
def test_default_database_url_is_sqlite_file_named_after_the_service(
    settings_class: type[CommonSettings],
) -> None:
    settings = settings_class(_env_file=None)
    assert settings.database_url == f"sqlite+aiosqlite:///var/{settings_class.service_name}.db"


def test_explicit_database_url_is_kept() -> None:
    assert things(database_url="sqlite+aiosqlite:///:memory:").database_url == (
        "sqlite+aiosqlite:///:memory:"
    )


def test_empty_database_url_from_env_means_embedded_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLIGHTDECK_TEST_DATABASE_URL", "")
    assert things().database_url == "sqlite+aiosqlite:///var/test.db"


def test_migrate_on_start_defaults_to_true_in_development() -> None:
    assert things().migrate_on_start is True


def test_migrate_on_start_defaults_to_false_in_production() -> None:
    assert things(environment="production").migrate_on_start is False


@pytest.mark.parametrize(
    ("environment", "env_value", "expected"),
    [("development", "false", False), ("production", "true", True)],
)
def test_migrate_on_start_explicit_value_wins(
    monkeypatch: pytest.MonkeyPatch, environment: str, env_value: str, expected: bool
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv("FLIGHTDECK_TEST_MIGRATE_ON_START", env_value)
    assert things().migrate_on_start is expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_body_bytes", 10),
        ("database_pool_size", 0),
        ("sentry_traces_sample_rate", 1.5),
        ("readiness_timeout_seconds", 0),
    ],
)
def test_out_of_range_values_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        things(**{field: value})


def test_cors_origins_are_read_as_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHTDECK_TEST_CORS_ALLOW_ORIGINS", '["https://a.example","https://b"]')
    assert things().cors_allow_origins == ["https://a.example", "https://b"]


# --- production secrets ------------------------------------------------------------------


def test_development_accepts_missing_and_weak_secrets() -> None:
    settings = secret_settings(signing_key="changeme")
    assert settings.production_problems() != []  # would fail in production ...
    assert settings.environment is Environment.DEVELOPMENT  # ... but development starts


def test_production_refuses_missing_secrets_naming_each_env_var() -> None:
    message = production_error()
    assert "refusing to start in production" in message
    assert "FLIGHTDECK_SEC_SIGNING_KEY is required" in message
    assert "FLIGHTDECK_SEC_WEBHOOK_SECRETS is required" in message


@pytest.mark.parametrize("placeholder", ["changeme", "CHANGEME", " secret ", "password", ""])
def test_production_refuses_placeholder_secret(placeholder: str) -> None:
    message = production_error(signing_key=placeholder, webhook_secrets=[STRONG])
    assert "FLIGHTDECK_SEC_SIGNING_KEY" in message
    assert "WEBHOOK" not in message
    expected = "is required" if placeholder.strip() == "" else "well-known placeholder"
    assert expected in message


def test_production_refuses_short_secret() -> None:
    short = "x9" * ((MIN_SECRET_LENGTH - 1) // 2)
    assert len(short) < MIN_SECRET_LENGTH
    message = production_error(signing_key=short, webhook_secrets=[STRONG])
    assert f"FLIGHTDECK_SEC_SIGNING_KEY must be at least {MIN_SECRET_LENGTH} characters" in (
        message
    )
    assert short not in message  # the secret itself is never echoed


def test_production_accepts_strong_secrets() -> None:
    settings = secret_settings(
        environment="production", signing_key=STRONG, webhook_secrets=[STRONG, STRONG_2]
    )
    assert settings.is_production
    assert settings.production_problems() == []
    assert settings.signing_key is not None
    assert settings.signing_key.get_secret_value() == STRONG


def test_production_reads_secrets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("FLIGHTDECK_SEC_SIGNING_KEY", STRONG)
    monkeypatch.setenv("FLIGHTDECK_SEC_WEBHOOK_SECRETS", json.dumps([STRONG, STRONG_2]))
    settings = secret_settings()
    assert [s.get_secret_value() for s in settings.webhook_secrets] == [STRONG, STRONG_2]


def test_production_refuses_empty_list_of_secrets() -> None:
    message = production_error(signing_key=STRONG, webhook_secrets=[])
    assert "FLIGHTDECK_SEC_WEBHOOK_SECRETS is required" in message
    assert "SIGNING_KEY" not in message


def test_production_checks_every_item_of_a_list_of_secrets() -> None:
    message = production_error(signing_key=STRONG, webhook_secrets=[STRONG, "admin"])
    assert "FLIGHTDECK_SEC_WEBHOOK_SECRETS is a well-known placeholder" in message


def test_production_problems_collects_all_problems_at_once() -> None:
    message = production_error(signing_key="short", webhook_secrets=["dev", ""])
    assert message.count("FLIGHTDECK_SEC_") == 3


def test_no_required_secrets_means_production_starts() -> None:
    assert things(environment="production").production_problems() == []


def test_production_refuses_whitespace_padded_short_secret() -> None:
    message = production_error(signing_key="k" + " " * MIN_SECRET_LENGTH, webhook_secrets=[STRONG])
    assert "FLIGHTDECK_SEC_SIGNING_KEY must be at least" in message
