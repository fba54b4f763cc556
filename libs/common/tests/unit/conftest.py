"""Fixtures for the flightdeck_common unit tests: a tiny service built with the real factory.

Apps are made with ``create_service_app`` and a test settings class (service ``test``, public
prefix ``/things``, SQLite file in ``tmp_path``); the lifespan is run explicitly because
``httpx.ASGITransport`` does not run it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic_settings import SettingsConfigDict

from flightdeck_common.logging import JsonFormatter
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.settings import CommonSettings

SHARED_ENV_KEYS = (
    "ENVIRONMENT",
    "REDIS_URL",
    "SENTRY_DSN",
    "SENTRY_TRACES_SAMPLE_RATE",
    "LOG_LEVEL",
    "LOG_JSON",
)
TEST_CLIENT = ("127.0.0.1", 50000)


class UnitSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_TEST_")

    service_name: ClassVar[str] = "test"
    public_prefix: ClassVar[str] = "/things"


@dataclass
class RunningService:
    app: FastAPI
    client: httpx.AsyncClient
    settings: UnitSettings


SettingsFactory = Callable[..., UnitSettings]
AppFactory = Callable[..., FastAPI]
ServiceStarter = Callable[..., Awaitable[RunningService]]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No shared or test-prefixed variable of the developer's shell leaks into settings."""
    for key in list(os.environ):
        upper = key.upper()
        if upper in SHARED_ENV_KEYS or upper.startswith("FLIGHTDECK_"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``configure_logging`` rewires the root and uvicorn loggers; undo it after each test."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
        for name in names
    }
    saved_disabled = {name: logging.getLogger(name).disabled for name in names}
    yield
    root.handlers = saved_root[0]
    root.setLevel(saved_root[1])
    for name, (handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers = handlers
        logger.propagate = propagate
        logger.disabled = saved_disabled[name]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Test settings; the database is a SQLite file in ``tmp_path`` unless overridden."""

    def make(**overrides: Any) -> UnitSettings:
        overrides.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        return UnitSettings(_env_file=None, **overrides)

    return make


@pytest.fixture
def build_app(make_settings: SettingsFactory) -> AppFactory:
    """``create_service_app`` with the test routers; the caller's log handlers are kept."""

    def build(
        *routers: APIRouter, settings: UnitSettings | None = None, **spec_fields: Any
    ) -> FastAPI:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            return create_service_app(
                settings or make_settings(),
                ServiceSpec(
                    title="Things",
                    description="Unit-test service",
                    version="1.2.3",
                    routers=routers,
                    **spec_fields,
                ),
            )
        finally:
            # Keep pytest's capture handlers (caplog) attached for the rest of the test.
            root.handlers = handlers
            root.setLevel(level)

    return build


@pytest.fixture
async def start_service(build_app: AppFactory) -> AsyncIterator[ServiceStarter]:
    """Build an app, run its lifespan and return it with an in-process client."""
    async with AsyncExitStack() as stack:

        async def start(
            *routers: APIRouter,
            settings: UnitSettings | None = None,
            base_url: str = "http://test",
            client: tuple[str, int] = TEST_CLIENT,
            **spec_fields: Any,
        ) -> RunningService:
            app = build_app(*routers, settings=settings, **spec_fields)
            await stack.enter_async_context(app.router.lifespan_context(app))
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app, client=client), base_url=base_url
                )
            )
            return RunningService(app=app, client=http, settings=app.state.settings)

        yield start


class JsonLineCollector(logging.Handler):
    """Formats each record with JsonFormatter *when emitted* (the request id is a contextvar)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.json_formatter = JsonFormatter("test")
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.json_formatter.format(record)))


@pytest.fixture
def json_logs() -> Iterator[list[dict[str, Any]]]:
    """JSON lines logged under the ``flightdeck`` logger namespace during the test."""
    collector = JsonLineCollector()
    logger = logging.getLogger("flightdeck")
    previous_level = logger.level
    logger.addHandler(collector)
    logger.setLevel(logging.DEBUG)
    try:
        yield collector.lines
    finally:
        logger.removeHandler(collector)
        logger.setLevel(previous_level)
