"""Sentry error reporting, enabled only when ``SENTRY_DSN`` is set."""

from __future__ import annotations

from flightdeck_common.settings import CommonSettings


def init_sentry(settings: CommonSettings, release: str) -> bool:
    """Initialise sentry-sdk for this service; returns whether it was enabled."""
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value():
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment.value,
        release=f"flightdeck-{settings.service_name}@{release}",
        traces_sample_rate=settings.sentry_traces_sample_rate,
    )
    sentry_sdk.set_tag("service", settings.service_name)
    return True
