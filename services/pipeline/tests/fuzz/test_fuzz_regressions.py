"""Regressions for what schemathesis and hand probes found (each was a 500)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from flightdeck_common.auth.claims import Role

PipelineHarness = Any
FAR_PAST = "0001-01-01T00:00:00+01:00"
FAR_FUTURE = "9999-12-31T23:59:59-01:00"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "github"


async def test_long_names_do_not_break_the_audit(pipeline: PipelineHarness) -> None:
    operator = pipeline.headers(Role.OPERATOR)
    run = await pipeline.client.post(
        "/pipelines", json={"repository": "a" * 200, "run_id": 1}, headers=operator
    )
    assert run.status_code == 201, run.text
    deployment = await pipeline.client.post(
        "/pipelines/deployments",
        json={"repository": "r" * 200, "environment": "e" * 100, "sha": "abcd"},
        headers=operator,
    )
    assert deployment.status_code == 201, deployment.text


@pytest.mark.parametrize("moment", [FAR_PAST, FAR_FUTURE])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/pipelines",
            {"repository": "a/b", "run_id": 1, "status": "in_progress", "started_at": "{m}"},
        ),
        (
            "POST",
            "/pipelines/deployments",
            {"repository": "a/b", "environment": "prod", "sha": "abcd", "deployed_at": "{m}"},
        ),
        ("POST", "/pipelines/incidents", {"repository": "a/b", "title": "t", "opened_at": "{m}"}),
        ("GET", "/pipelines?since={m}", None),
        ("GET", "/pipelines/stats?until={m}", None),
    ],
)
async def test_unconvertible_datetimes_are_422(
    pipeline: PipelineHarness, moment: str, method: str, path: str, body: Any
) -> None:
    from urllib.parse import quote

    url = path.replace("{m}", quote(moment))
    content = json.loads(json.dumps(body).replace("{m}", moment)) if body else None
    response = await pipeline.client.request(
        method, url, json=content, headers=pipeline.headers(Role.OPERATOR)
    )
    assert response.status_code == 422, response.text


async def test_naive_since_is_422(pipeline: PipelineHarness) -> None:
    response = await pipeline.client.get(
        "/pipelines", params={"since": "2000-01-01T00:00:00"}, headers=pipeline.headers()
    )
    assert response.status_code == 422


async def test_cursor_with_unconvertible_datetime_is_400(pipeline: PipelineHarness) -> None:
    raw = json.dumps([{"dt": FAR_PAST}, 1]).encode()
    cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    for path in ("/pipelines", "/pipelines/deployments", "/pipelines/incidents"):
        response = await pipeline.client.get(
            path, params={"cursor": cursor}, headers=pipeline.headers()
        )
        assert response.status_code == 400, (path, response.text)


@pytest.mark.parametrize("moment", [FAR_PAST, FAR_FUTURE])
async def test_webhook_with_unconvertible_timestamp_is_kept_as_failed(
    pipeline: PipelineHarness, moment: str
) -> None:
    body = json.loads((FIXTURES / "workflow_run" / "completed.payload.json").read_bytes())
    body["workflow_run"]["updated_at"] = moment
    response = await pipeline.deliver("workflow_run", body, delivery_id="unconvertible")
    assert response.status_code == 202, response.text
    assert await pipeline.stored_result("unconvertible") == "failed"


async def test_absurdly_nested_webhook_body_is_400(pipeline: PipelineHarness) -> None:
    response = await pipeline.deliver("push", b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400
