"""Deployments and incidents: manual API, GitHub issues labelled as incidents, attribution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from flightdeck_common.auth.claims import Role
from flightdeck_pipeline.deployments.models import Incident
from flightdeck_pipeline.outbox import OutboxEvent

PipelineHarness = Any
FIXTURES = Path(__file__).parents[1] / "fixtures" / "github"


def _issue(
    action: str, *, labels: list[str], state: str = "open", closed_at: str | None = None
) -> dict[str, Any]:
    return {
        "action": action,
        "issue": {
            "number": 17,
            "title": "checkout is down",
            "state": state,
            "labels": [{"name": name} for name in labels],
            "created_at": "2019-05-15T16:00:00Z",
            "closed_at": closed_at,
        },
        "repository": {"full_name": "Codertocat/Hello-World"},
    }


async def _incident(harness: PipelineHarness) -> Incident | None:
    async with harness.app.state.resources.sessionmaker() as session:
        return (await session.scalars(select(Incident))).one_or_none()


async def test_labelled_issue_becomes_an_attributed_incident(pipeline: PipelineHarness) -> None:
    # A successful production deployment at 15:20:55, then an incident at 16:00.
    await pipeline.deliver(
        "deployment_status", (FIXTURES / "deployment_status" / "payload.json").read_bytes()
    )
    unlabelled = await pipeline.deliver(
        "issues", _issue("opened", labels=["bug"]), delivery_id="unlabelled"
    )
    assert unlabelled.json()["result"] == "accepted"
    assert await pipeline.stored_result("unlabelled") == "ignored"  # read: not an incident
    assert await _incident(pipeline) is None

    opened = await pipeline.deliver(
        "issues", _issue("opened", labels=["Incident"]), delivery_id="opened"
    )
    assert opened.status_code == 202
    assert await pipeline.stored_result("opened") == "processed"
    incident = await _incident(pipeline)
    assert incident is not None
    assert (incident.issue_number, incident.resolved_at) == (17, None)
    assert incident.deployment_pk is not None  # the deployment before it opened

    closed = await pipeline.deliver(
        "issues",
        _issue("closed", labels=["incident"], state="closed", closed_at="2019-05-15T17:30:00Z"),
    )
    assert closed.status_code == 202
    incident = await _incident(pipeline)
    assert incident is not None
    assert incident.resolved_at is not None
    assert incident.resolved_at.isoformat() == "2019-05-15T17:30:00+00:00"


async def test_manual_deployment_and_incident_lifecycle(pipeline: PipelineHarness) -> None:
    operator = pipeline.headers(Role.OPERATOR)
    deployed = await pipeline.client.post(
        "/pipelines/deployments",
        json={
            "repository": "acme/shop",
            "environment": "Production",
            "sha": "abc123",
            "deployed_at": "2026-11-20T10:00:00Z",
        },
        headers=operator,
    )
    assert deployed.status_code == 201, deployed.text
    assert deployed.json()["production"] is True  # by name, case-insensitively
    assert deployed.json()["status"] == "success"

    opened = await pipeline.client.post(
        "/pipelines/incidents",
        json={"repository": "acme/shop", "title": "5xx spike", "opened_at": "2026-11-20T11:00:00Z"},
        headers=operator,
    )
    assert opened.status_code == 201, opened.text
    assert opened.json()["deployment_pk"] == deployed.json()["id"]
    incident_id = opened.json()["id"]

    too_early = await pipeline.client.post(
        f"/pipelines/incidents/{incident_id}/resolve",
        json={"resolved_at": "2026-11-20T10:30:00Z"},
        headers=operator,
    )
    assert too_early.status_code == 409
    resolved = await pipeline.client.post(
        f"/pipelines/incidents/{incident_id}/resolve",
        json={"resolved_at": "2026-11-20T12:00:00Z"},
        headers=operator,
    )
    assert resolved.status_code == 200
    again = await pipeline.client.post(
        f"/pipelines/incidents/{incident_id}/resolve", json={}, headers=operator
    )
    assert again.status_code == 409
    missing = await pipeline.client.post(
        "/pipelines/incidents/424242/resolve", json={}, headers=operator
    )
    assert missing.status_code == 404

    listed = await pipeline.client.get("/pipelines/deployments", headers=pipeline.headers())
    assert [d["sha"] for d in listed.json()["items"]] == ["abc123"]
    viewer_write = await pipeline.client.post(
        "/pipelines/incidents", json={"repository": "a/b", "title": "x"}, headers=pipeline.headers()
    )
    assert viewer_write.status_code == 403
    async with pipeline.app.state.resources.sessionmaker() as session:
        types = set((await session.scalars(select(OutboxEvent.event_type))).all())
    assert {
        "pipeline.deployment.recorded",
        "pipeline.incident.opened",
        "pipeline.incident.resolved",
    } <= types


async def test_bad_deployments_are_422(pipeline: PipelineHarness) -> None:
    for body in (
        {"repository": "a/b", "environment": "prod", "sha": "not-hex!"},
        {
            "repository": "a/b",
            "environment": "prod",
            "sha": "abcd",
            "deployed_at": "2026-01-01T00:00:00",
        },
        {"repository": "a/b", "environment": "prod", "sha": "abcd", "status": "exploded"},
    ):
        response = await pipeline.client.post(
            "/pipelines/deployments", json=body, headers=pipeline.headers(Role.OPERATOR)
        )
        assert response.status_code == 422, json.dumps(body)
