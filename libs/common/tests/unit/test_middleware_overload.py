"""Past its concurrency cap a service answers 503 ``overloaded`` at once instead of queueing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import APIRouter, Request

from flightdeck_common.errors import PROBLEM_JSON
from flightdeck_common.middleware.overload import SHED

LIMIT = 3
HOOK_LIMIT = 2

router = APIRouter()
gate: dict[str, asyncio.Event] = {}
entered: list[str] = []


async def _wait(name: str) -> dict[str, str]:
    entered.append(name)
    await gate["open"].wait()
    return {"done": name}


@router.get("/things/slow/{name}")
async def slow(name: str) -> dict[str, str]:
    return await _wait(name)


@router.post("/hooks/slow/{name}")
async def slow_hook(name: str, request: Request) -> dict[str, str]:
    await request.body()
    return await _wait(name)


@router.get("/things/events")
async def events() -> dict[str, str]:
    return await _wait("events")


@pytest.fixture
async def service(start_service: Any, make_settings: Any) -> Any:
    gate["open"] = asyncio.Event()
    entered.clear()
    return await start_service(
        router,
        settings=make_settings(max_concurrent_requests=LIMIT),
        concurrency_limit_overrides={"/hooks/": HOOK_LIMIT},
    )


async def _until_entered(count: int) -> None:
    for _ in range(500):
        if len(entered) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(entered)} of {count} requests reached the handler")


def _shed_count(group: str) -> float:
    return SHED.labels(group)._value.get()


async def test_requests_over_the_cap_get_503_overloaded_at_once(service: Any) -> None:
    http = service.client
    held = [asyncio.create_task(http.get(f"/things/slow/{i}")) for i in range(LIMIT)]
    await _until_entered(LIMIT)
    before = _shed_count("default")

    refused = await http.get("/things/slow/extra")

    assert refused.status_code == 503
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "overloaded"
    assert "extra" not in entered  # never reached the handler
    assert _shed_count("default") == before + 1
    # Probes and /metrics are never shed, nor event streams.
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/metrics")).status_code == 200
    stream = asyncio.create_task(http.get("/things/events"))
    await _until_entered(LIMIT + 1)

    gate["open"].set()
    assert [r.status_code for r in await asyncio.gather(*held)] == [200] * LIMIT
    assert (await stream).status_code == 200
    # Slots are given back: the next request is served.
    assert (await http.get("/things/slow/after")).json() == {"done": "after"}


async def test_an_override_group_has_its_own_slots(service: Any) -> None:
    http = service.client
    hooks = [
        asyncio.create_task(http.post(f"/hooks/slow/{i}", content=b"x" * 100))
        for i in range(HOOK_LIMIT)
    ]
    await _until_entered(HOOK_LIMIT)

    refused = await http.post("/hooks/slow/extra", content=b"y" * 5000)
    assert refused.status_code == 503
    assert refused.json()["code"] == "overloaded"
    # The body was read and dropped: the connection can stay open.
    assert refused.headers.get("connection") != "close"
    # The default group is untouched by the hooks' load.
    reader = asyncio.create_task(http.get("/things/slow/reader"))
    await _until_entered(HOOK_LIMIT + 1)

    gate["open"].set()
    assert [r.status_code for r in await asyncio.gather(*hooks, reader)] == [200] * 3


async def test_zero_means_no_cap(start_service: Any, make_settings: Any) -> None:
    gate["open"] = asyncio.Event()
    entered.clear()
    service = await start_service(router, settings=make_settings(max_concurrent_requests=0))
    held = [asyncio.create_task(service.client.get(f"/things/slow/{i}")) for i in range(20)]
    await _until_entered(20)
    gate["open"].set()
    assert {r.status_code for r in await asyncio.gather(*held)} == {200}
