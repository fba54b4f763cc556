"""JSON log lines with the request id; configure_logging wiring."""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from flightdeck_common.logging import JsonFormatter, configure_logging, request_id_var


def record(message: str = "hello %s", *args: Any, **extra: Any) -> logging.LogRecord:
    item = logging.LogRecord("flightdeck.test", logging.WARNING, __file__, 1, message, args, None)
    item.__dict__.update(extra)
    return item


def test_json_line_has_the_standard_fields() -> None:
    before = datetime.now(UTC)
    line = json.loads(JsonFormatter("auth").format(record("hello %s", "world")))
    assert line["level"] == "warning"
    assert line["service"] == "auth"
    assert line["logger"] == "flightdeck.test"
    assert line["message"] == "hello world"
    assert "request_id" not in line
    logged_at = datetime.fromisoformat(line["time"])
    assert logged_at.tzinfo is not None
    assert abs((logged_at - before).total_seconds()) < 5


def test_json_line_carries_the_request_id_of_the_context() -> None:
    token = request_id_var.set("rid-42")
    try:
        line = json.loads(JsonFormatter("auth").format(record()))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "rid-42"


def test_extras_are_included_and_private_attributes_are_not() -> None:
    line = json.loads(
        JsonFormatter("auth").format(
            record(user_id=7, tags=["a"], when=datetime(2026, 1, 1, tzinfo=UTC), _secret="x")
        )
    )
    assert line["user_id"] == 7
    assert line["tags"] == ["a"]
    assert line["when"] == "2026-01-01 00:00:00+00:00"  # non-JSON values via str()
    assert "_secret" not in line
    for reserved in ("args", "msg", "levelno", "pathname", "exc_info"):
        assert reserved not in line


def test_exception_is_formatted() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        item = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = json.loads(JsonFormatter("auth").format(item))
    assert "Traceback" in line["exception"]
    assert "ValueError: bad thing" in line["exception"]


def test_each_line_is_one_line() -> None:
    text = JsonFormatter("auth").format(record("multi\nline\r\nmessage"))
    assert "\n" not in text
    assert json.loads(text)["message"] == "multi\nline\r\nmessage"


@pytest.mark.parametrize("json_lines", [True, False])
def test_configure_logging_routes_root_to_stdout(
    monkeypatch: pytest.MonkeyPatch, json_lines: bool
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    configure_logging("pipeline", "debug", json_lines=json_lines)
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    assert len(root.handlers) == 1
    assert logging.getLogger("uvicorn.access").disabled
    assert logging.getLogger("uvicorn.error").handlers == []
    assert logging.getLogger("uvicorn.error").propagate

    token = request_id_var.set("rid-9")
    try:
        logging.getLogger("uvicorn.error").info("server started")
    finally:
        request_id_var.reset(token)
    output = stream.getvalue().strip()
    if json_lines:
        line = json.loads(output)
        assert line["service"] == "pipeline"
        assert line["logger"] == "uvicorn.error"
        assert line["message"] == "server started"
        assert line["request_id"] == "rid-9"
    else:
        assert output.endswith("server started [rid-9]")
        assert "INFO uvicorn.error" in output


def test_configure_logging_twice_does_not_duplicate_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    configure_logging("pipeline")
    configure_logging("pipeline")
    logging.getLogger("flightdeck.test").warning("once")
    assert len(stream.getvalue().strip().splitlines()) == 1
