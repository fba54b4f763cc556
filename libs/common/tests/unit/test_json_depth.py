"""JSON bodies nested deeper than the limit get 400 json_too_deep, never a 500."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from fastapi import APIRouter, Request
from pydantic import BaseModel

from flightdeck_common.errors import PROBLEM_JSON
from flightdeck_common.json_depth import json_depth_exceeds

# --- the measure ------------------------------------------------------------------------------


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _random_document(rng: random.Random, budget: int) -> Any:
    if budget == 0 or rng.random() < 0.2:
        # Strings full of brackets, quotes and backslashes must not count.
        return rng.choice([1, None, "a[{", '"]]}}', "\\", '\\"[', "x\\\\", "é{"])
    if rng.random() < 0.5:
        return [_random_document(rng, budget - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}[\\": _random_document(rng, budget - 1) for i in range(rng.randint(0, 3))}


def test_the_measure_agrees_with_the_parsed_depth() -> None:
    rng = random.Random(9)
    for _ in range(1500):
        value = _random_document(rng, rng.randint(0, 25))
        document = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        depth = _depth(value)
        for limit in (0, 1, 2, 5, 9, 10, 11, 20):
            assert json_depth_exceeds(document, limit) == (depth > limit), (document, limit)


@pytest.mark.parametrize(
    ("document", "deeper_than_64"),
    [
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b"[" * 100_000, True),  # what makes Python's json raise RecursionError
        (b'{"a":' * 65 + b"1" + b"}" * 65, True),
        (b'["' + b"[" * 1000 + b'"]', False),  # brackets in a string
        (b"[[]]" * 100_000, False),
        (b"", False),
        (b"not json {{{", False),
    ],
)
def test_the_measure_at_the_edges(document: bytes, deeper_than_64: bool) -> None:
    assert json_depth_exceeds(document, 64) is deeper_than_64


# --- through a service ------------------------------------------------------------------------

LIMIT = 8
router = APIRouter(prefix="/things")


class Document(BaseModel):
    data: Any = None


@router.post("/document")
async def post_document(document: Document) -> dict[str, int]:
    """Parse a JSON body with pydantic."""
    return {"depth": _depth(document.data)}


@router.post("/raw/upload")
async def post_raw(request: Request) -> dict[str, int]:
    """Read the body raw (its route checks it itself)."""
    return {"received": len(await request.body())}


@router.post("/form")
async def post_form(request: Request) -> dict[str, int]:
    """Read a form body."""
    return {"fields": len(await request.form())}


@pytest.fixture
async def client(start_service: Any, make_settings: Any) -> Any:
    service = await start_service(
        router,
        settings=make_settings(max_json_depth=LIMIT),
        json_depth_overrides={"/things/raw/": None},
    )
    return service.client


def nested(depth: int) -> bytes:
    return b'{"data":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


async def test_a_body_at_the_limit_is_accepted(client: Any) -> None:
    response = await client.post(
        "/things/document", content=nested(LIMIT), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"depth": LIMIT - 1}


@pytest.mark.parametrize("depth", [LIMIT + 1, 900, 100_000])
@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json", None])
async def test_a_deeper_body_is_a_400_json_too_deep(
    client: Any, depth: int, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/things/document", content=nested(depth), headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["code"] == "json_too_deep"
    assert f"deeper than {LIMIT}" in problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]


async def test_a_streamed_deep_body_is_measured_too(client: Any) -> None:
    async def chunks() -> Any:
        yield b'{"data":'
        for _ in range(10):
            yield b"[" * 10

    response = await client.post(
        "/things/document", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "json_too_deep"


async def test_an_exempt_prefix_gets_the_raw_body(client: Any) -> None:
    body = b"[" * 10_000
    response = await client.post(
        "/things/raw/upload", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {"received": len(body)}


async def test_form_bodies_are_not_measured(client: Any) -> None:
    response = await client.post("/things/form", data={"note": "[" * 100})
    assert response.status_code == 200
    assert response.json() == {"fields": 1}
