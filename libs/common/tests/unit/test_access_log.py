"""One structured access-log line per request; probes are logged quietly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import APIRouter

from flightdeck_common.middleware.access_log import QUIET_PATHS

router = APIRouter(prefix="/things")
SLOW_SECONDS = 0.05


@router.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    """Return the item id."""
    return {"item_id": item_id}


@router.get("/slow")
async def read_slowly() -> dict[str, str]:
    """Answer after a short pause."""
    await asyncio.sleep(SLOW_SECONDS)
    return {"ok": "yes"}


@router.get("/crash")
async def crash() -> dict[str, str]:
    """Fail unexpectedly."""
    raise RuntimeError("boom")


@pytest.fixture
async def client(start_service: Any, make_settings: Any) -> Any:
    return (await start_service(router, settings=make_settings(max_body_bytes=1024))).client


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "flightdeck.access"]


async def test_one_line_per_request_with_request_fields(
    client: Any, json_logs: list[dict[str, Any]]
) -> None:
    response = await client.get(
        "/things/items/42", headers={"X-Request-ID": "access-1", "User-Agent": "probe/1.0"}
    )
    assert response.status_code == 200
    [line] = access_lines(json_logs)
    assert line["level"] == "info"
    assert line["message"] == "GET /things/items/42 200"
    assert line["http_method"] == "GET"
    assert line["http_path"] == "/things/items/42"
    assert line["http_route"] == "/things/items/{item_id}"
    assert line["http_status"] == 200
    assert line["request_id"] == "access-1"
    assert line["response_bytes"] == len(response.content)
    assert line["client_ip"] == "127.0.0.1"
    assert line["user_agent"] == "probe/1.0"
    assert isinstance(line["duration_ms"], float | int)
    assert line["duration_ms"] >= 0
    assert line["service"] == "test"


async def test_each_request_gets_its_own_line(client: Any, json_logs: list[dict[str, Any]]) -> None:
    for item_id in (1, 2, 3):
        await client.get(f"/things/items/{item_id}")
    paths = [line["http_path"] for line in access_lines(json_logs)]
    assert paths == ["/things/items/1", "/things/items/2", "/things/items/3"]
    assert len({line["request_id"] for line in access_lines(json_logs)}) == 3


async def test_duration_measures_the_request(client: Any, json_logs: list[dict[str, Any]]) -> None:
    await client.get("/things/items/1")
    await client.get("/things/slow")
    fast, slow = access_lines(json_logs)
    assert slow["duration_ms"] >= SLOW_SECONDS * 1000
    assert fast["duration_ms"] < slow["duration_ms"]


@pytest.mark.parametrize(
    ("method", "path", "status", "route"),
    [
        ("GET", "/things/unknown", 404, None),
        ("PUT", "/things/slow", 405, "/things/slow"),
        ("GET", "/things/crash", 500, "/things/crash"),
        ("GET", "/things/items/not-a-number", 422, "/things/items/{item_id}"),
    ],
)
async def test_error_statuses_are_logged(
    client: Any,
    json_logs: list[dict[str, Any]],
    method: str,
    path: str,
    status: int,
    route: str | None,
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    [line] = access_lines(json_logs)
    assert line["level"] == "info"
    assert line["http_status"] == status
    assert line["http_method"] == method
    assert line["http_route"] == route
    assert line["request_id"] == response.headers["x-request-id"]


async def test_body_limit_rejections_are_logged(
    client: Any, json_logs: list[dict[str, Any]]
) -> None:
    response = await client.post("/things/slow", content=b"x" * 2048)
    assert response.status_code == 413
    [line] = access_lines(json_logs)
    assert line["http_status"] == 413
    assert line["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probe_paths_are_logged_at_debug(
    client: Any, json_logs: list[dict[str, Any]], path: str
) -> None:
    assert path in QUIET_PATHS
    response = await client.get(path)
    assert response.status_code == 200
    [line] = access_lines(json_logs)
    assert line["level"] == "debug"
    assert line["http_path"] == path


async def test_long_user_agent_is_truncated(client: Any, json_logs: list[dict[str, Any]]) -> None:
    await client.get("/things/items/1", headers={"User-Agent": "u" * 1000})
    [line] = access_lines(json_logs)
    assert line["user_agent"] == "u" * 256
