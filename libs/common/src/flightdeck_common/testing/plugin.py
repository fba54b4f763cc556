"""pytest plugin shipped with flightdeck_common: real PostgreSQL and Redis for tests.

Session fixtures start throwaway servers from the system binaries on free ports
(data in pytest's temp dir); per-test fixtures hand out a fresh database / a flushed
Redis. ``database_url`` is parametrized so storage tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flightdeck_common.devstack.ports import free_port
from flightdeck_common.devstack.postgres import PostgresServer
from flightdeck_common.devstack.redis import RedisServer

_USED: dict[str, set[str]] = {"postgres": set(), "redis": set()}
_PASSED: set[str] = set()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (stopped at the end)."""
    base = tmp_path_factory.mktemp("postgres")
    server = PostgresServer(base / "data", free_port(), databases=[])
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
    _USED["postgres"].add(request.node.nodeid)
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


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_server: RedisServer) -> str:
    """URL of the session Redis, flushed before the test."""
    _USED["redis"].add(request.node.nodeid)
    redis_server.ensure_running()
    import socket

    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as conn:
        conn.sendall(b"FLUSHALL\r\n")
        conn.recv(64)
    return redis_server.url


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        _PASSED.add(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many passed tests really used PostgreSQL and Redis."""
    postgres = len(_USED["postgres"] & _PASSED)
    redis = len(_USED["redis"] & _PASSED)
    if _USED["postgres"] or _USED["redis"]:
        terminalreporter.write_sep("-", "flightdeck storage backends")
        terminalreporter.write_line(f"passed against real PostgreSQL: {postgres}")
        terminalreporter.write_line(f"passed against real Redis: {redis}")
