"""Replays: incident updates are ordered by the issue's updated_at, and a captured delivery
replayed under a new X-GitHub-Delivery changes no stored run or incident."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from flightdeck_pipeline.deployments.models import Incident
from flightdeck_pipeline.runs.models import Run

from ..conftest import fixture_body

PipelineHarness = Any
RUN_COLUMNS = (
    "status",
    "conclusion",
    "display_status",
    "run_attempt",
    "source_updated_at",
    "started_at",
    "completed_at",
    "duration_seconds",
)
# What a user sees of an incident (the ordering column is checked on its own).
INCIDENT_COLUMNS = ("title", "opened_at", "resolved_at")


def _issue(action: str, updated_at: str, *, closed: bool = False) -> dict[str, Any]:
    """An ``issues`` delivery of GitHub's shape (octokit's examples have no incident)."""
    return {
        "action": action,
        "issue": {
            "number": 42,
            "title": "checkout is down",
            "state": "closed" if closed else "open",
            "labels": [{"name": "incident"}],
            "created_at": "2026-12-01T10:00:00Z",
            "updated_at": updated_at,
            "closed_at": updated_at if closed else None,
        },
        "repository": {"full_name": "Codertocat/Hello-World"},
    }


async def _incident(harness: PipelineHarness) -> dict[str, Any]:
    async with harness.app.state.resources.sessionmaker() as session:
        incident = (await session.scalars(select(Incident))).one()
        return {name: getattr(incident, name) for name in INCIDENT_COLUMNS}


async def _run(harness: PipelineHarness) -> dict[str, Any]:
    async with harness.app.state.resources.sessionmaker() as session:
        run = (await session.scalars(select(Run))).one()
        return {name: getattr(run, name) for name in RUN_COLUMNS}


async def test_older_opened_does_not_reopen_a_closed_incident(pipeline: PipelineHarness) -> None:
    opened = _issue("opened", "2026-12-01T10:00:00Z")
    await pipeline.deliver("issues", opened)
    await pipeline.deliver("issues", _issue("closed", "2026-12-01T11:00:00Z", closed=True))
    closed = await _incident(pipeline)
    assert closed["resolved_at"] is not None
    # A late (or replayed) "opened" is older than the close: nothing changes.
    late = await pipeline.deliver("issues", opened)
    assert late.status_code == 202
    assert await _incident(pipeline) == closed
    # A newer reopen does reopen it.
    await pipeline.deliver("issues", _issue("reopened", "2026-12-01T12:00:00Z"))
    reopened = await _incident(pipeline)
    assert reopened["resolved_at"] is None
    async with pipeline.app.state.resources.sessionmaker() as session:
        stored = (await session.scalars(select(Incident))).one()
        assert stored.source_updated_at.isoformat() == "2026-12-01T12:00:00+00:00"


async def test_captured_deliveries_replayed_under_new_ids_change_nothing(
    pipeline: PipelineHarness,
) -> None:
    requested = fixture_body("workflow_run", "requested.payload.json")
    completed = fixture_body("workflow_run", "completed.payload.json")
    opened = _issue("opened", "2026-12-01T10:00:00Z")
    closed = _issue("closed", "2026-12-01T11:00:00Z", closed=True)
    for event, body in (
        ("workflow_run", requested),
        ("workflow_run", completed),
        ("issues", opened),
        ("issues", closed),
    ):
        assert (await pipeline.deliver(event, body)).status_code == 202
    run, incident = await _run(pipeline), await _incident(pipeline)
    assert (run["status"], incident["resolved_at"] is not None) == ("completed", True)
    # Each captured delivery sent again with a fresh X-GitHub-Delivery (the signature
    # covers the body only), oldest first and newest first.
    for event, body in (
        ("workflow_run", requested),
        ("issues", opened),
        ("workflow_run", completed),
        ("issues", closed),
        ("workflow_run", requested),
        ("issues", opened),
    ):
        replay = await pipeline.deliver(event, body)
        assert replay.status_code == 202, replay.text
        assert await _run(pipeline) == run
        assert await _incident(pipeline) == incident
