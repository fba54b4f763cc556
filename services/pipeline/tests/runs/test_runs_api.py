"""The run API: manual reports from other CI systems, transitions, reads, logs."""

from __future__ import annotations

from typing import Any

import pytest

from flightdeck_common.auth.claims import Role

PipelineHarness = Any


async def _report(harness: PipelineHarness, **fields: Any) -> Any:
    body = {"repository": "acme/shop", "run_id": 1, **fields}
    return await harness.client.post(
        "/pipelines", json=body, headers=harness.headers(Role.OPERATOR)
    )


async def test_operator_reports_and_updates_a_run(pipeline: PipelineHarness) -> None:
    created = await _report(pipeline, status="in_progress", workflow_name="deploy", branch="main")
    assert created.status_code == 201, created.text
    run = created.json()
    assert (run["status"], run["display_status"], run["source"]) == (
        "in_progress",
        "running",
        "manual",
    )
    assert run["actor"] == "operator-user"
    done = await _report(pipeline, status="completed", conclusion="failure")
    assert done.status_code == 200
    assert done.json()["id"] == run["id"]
    assert done.json()["display_status"] == "failed"
    assert done.json()["workflow_name"] == "deploy"  # kept: the update did not carry it
    # Same rules as webhooks: a completed run does not go back.
    late = await _report(pipeline, status="queued")
    assert late.json()["status"] == "completed"


async def test_viewer_cannot_write_and_anonymous_cannot_read(pipeline: PipelineHarness) -> None:
    viewer = await pipeline.client.post(
        "/pipelines", json={"repository": "a/b", "run_id": 1}, headers=pipeline.headers()
    )
    assert viewer.status_code == 403
    assert (await pipeline.client.get("/pipelines")).status_code == 401


@pytest.mark.parametrize(
    ("start", "change", "status"),
    [
        ({"status": "queued"}, {"status": "in_progress"}, 200),
        ({"status": "queued"}, {"status": "completed", "conclusion": "success"}, 200),
        ({"status": "in_progress"}, {"status": "queued"}, 409),
        ({"status": "in_progress"}, {"status": "in_progress"}, 409),
        ({"status": "in_progress"}, {"status": "completed"}, 409),
        ({"status": "completed", "conclusion": "success"}, {"status": "in_progress"}, 409),
        ({"status": "queued"}, {"status": "in_progress", "conclusion": "success"}, 409),
    ],
)
async def test_patch_validates_transitions(
    pipeline: PipelineHarness, start: dict[str, Any], change: dict[str, Any], status: int
) -> None:
    run_pk = (await _report(pipeline, **start)).json()["id"]
    response = await pipeline.client.patch(
        f"/pipelines/{run_pk}", json=change, headers=pipeline.headers(Role.OPERATOR)
    )
    assert response.status_code == status, response.text
    if status == 409:
        assert response.json()["code"] == "illegal_transition"


async def test_list_filters_and_paginates_stably(pipeline: PipelineHarness) -> None:
    for run_id in range(1, 8):
        await _report(
            pipeline,
            run_id=run_id,
            repository="acme/shop" if run_id % 2 else "acme/api",
            status="completed",
            conclusion="success" if run_id % 3 else "failure",
            actor="dora" if run_id < 4 else "ken",
        )
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "repository": "acme/shop"}
        if cursor:
            params["cursor"] = cursor
        page = (
            await pipeline.client.get("/pipelines", params=params, headers=pipeline.headers())
        ).json()
        seen += [item["run_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [7, 5, 3, 1]  # newest first, no duplicates, no gaps
    failed = await pipeline.client.get(
        "/pipelines", params={"status": "failed", "owner": "ken"}, headers=pipeline.headers()
    )
    assert [i["run_id"] for i in failed.json()["items"]] == [6]
    bad = await pipeline.client.get(
        "/pipelines", params={"cursor": "garbage!"}, headers=pipeline.headers()
    )
    assert bad.status_code == 400


async def test_read_one_with_jobs_and_logs(pipeline: PipelineHarness) -> None:
    run_pk = (await _report(pipeline, status="in_progress")).json()["id"]
    posted = await pipeline.client.post(
        f"/pipelines/{run_pk}/logs",
        json={"lines": [{"message": "compiling"}, {"level": "error", "message": "boom"}]},
        headers=pipeline.headers(Role.OPERATOR),
    )
    assert posted.status_code == 201
    assert [line["message"] for line in posted.json()] == ["compiling", "boom"]
    detail = await pipeline.client.get(f"/pipelines/{run_pk}", headers=pipeline.headers())
    assert detail.status_code == 200
    assert detail.json()["jobs"] == []
    logs = await pipeline.client.get(f"/pipelines/{run_pk}/logs", headers=pipeline.headers())
    messages = [line["message"] for line in logs.json()["items"]]
    assert messages[-2:] == ["compiling", "boom"]
    errors = await pipeline.client.get(
        "/pipelines/logs", params={"level": "error"}, headers=pipeline.headers()
    )
    assert [line["message"] for line in errors.json()["items"]] == ["boom"]
    assert (
        await pipeline.client.get("/pipelines/999999", headers=pipeline.headers())
    ).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"repository": "a/b", "run_id": "x"},
        {"repository": "a/b", "run_id": 1, "status": "completed"},
        {"repository": "a/b", "run_id": 1, "status": "queued", "conclusion": "success"},
        {"repository": "a/b", "run_id": 1, "started_at": "2026-01-01T00:00:00"},
        {"repository": "", "run_id": 1},
        {"repository": "a/b", "run_id": 2**64},
    ],
)
async def test_bad_run_reports_are_422(pipeline: PipelineHarness, body: dict[str, Any]) -> None:
    response = await pipeline.client.post(
        "/pipelines", json=body, headers=pipeline.headers(Role.OPERATOR)
    )
    assert response.status_code == 422, response.text


async def test_manual_changes_are_audited(pipeline: PipelineHarness) -> None:
    from sqlalchemy import select

    from flightdeck_pipeline.outbox import OutboxEvent

    await _report(pipeline, status="queued")
    async with pipeline.app.state.resources.sessionmaker() as session:
        types = (await session.scalars(select(OutboxEvent.event_type))).all()
    assert "pipeline.run.upserted" in types
