"""Which failures are outages (503) and which are bugs (500)."""

from __future__ import annotations

import sqlite3

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa_exc

from flightdeck_common.errors import is_connection_failure


def _dbapi(orig: Exception, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    return sa_exc.OperationalError("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)"),
        _dbapi(ConnectionResetError()),
        _dbapi(sqlite3.OperationalError("database is locked")),
        _dbapi(Exception("server closed the connection"), invalidated=True),
        sa_exc.TimeoutError("QueuePool limit reached"),
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        RedisTimeoutError("Timeout reading from socket"),
    ],
)
def test_outages(error: Exception) -> None:
    assert is_connection_failure(error)


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(2, "No such file"),
        PermissionError(13, "denied"),
        _dbapi(sqlite3.OperationalError("no such table: run")),
        _dbapi(sqlite3.OperationalError('near "SELEC": syntax error')),
        RedisResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ],
)
def test_bugs_are_not_outages(error: Exception) -> None:
    assert not is_connection_failure(error)
