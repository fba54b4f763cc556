"""The GitHub receiver: signatures, dedupe, acceptance before mapping, and every fixture
mapped by the worker behind the acknowledgement."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from flightdeck_pipeline.deployments.models import Change, Deployment, DeploymentStatus
from flightdeck_pipeline.runs.models import Job, LogLine, Run
from flightdeck_pipeline.webhooks.models import Delivery

PipelineHarness = Any
FIXTURES = {
    "ping": ["payload.json", "with-app_id.payload.json", "with-organization.payload.json"],
    "workflow_run": [
        "requested.payload.json",
        "requested.with-conclusion.payload.json",
        "completed.payload.json",
        "completed.with-pull-requests.payload.json",
    ],
    "workflow_job": [
        "queued.payload.json",
        "waiting.payload.json",
        "in_progress.payload.json",
        "in_progress.with-queued-steps.payload.json",
        "queued.with-deployment.payload.json",
        "completed.success.with-organization.payload.json",
        "completed.failure.with-organization.payload.json",
    ],
    "deployment": ["payload.json", "gh-pages.payload.json", "with-installation.payload.json"],
    "deployment_status": [
        "payload.json",
        "gh-pages.payload.json",
        "with-installation.payload.json",
    ],
    "push": [
        "payload.json",
        "1.payload.json",
        "with-installation.payload.json",
        "with-new-branch.payload.json",
        "with-no-username-committer.payload.json",
        "with-organization.payload.json",
    ],
}


def _body(event: str, name: str) -> bytes:
    return (Path(__file__).parents[1] / "fixtures" / "github" / event / name).read_bytes()


async def _count(harness: PipelineHarness, model: Any, *where: Any) -> int:
    async with harness.app.state.resources.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _one(harness: PipelineHarness, model: Any, *where: Any) -> Any:
    async with harness.app.state.resources.sessionmaker() as session:
        return (await session.scalars(select(model).where(*where))).one()


@pytest.mark.parametrize(
    ("event", "name"), [(e, n) for e, names in FIXTURES.items() for n in names]
)
async def test_every_fixture_is_accepted(pipeline: PipelineHarness, event: str, name: str) -> None:
    delivery_id = f"{event}-{name}".replace(".", "-").replace("_", "-")
    response = await pipeline.deliver(event, _body(event, name), delivery_id=delivery_id)
    expected = 200 if event == "ping" else 202
    assert response.status_code == expected, response.text
    result = response.json()["result"]
    assert result == ("pong" if event == "ping" else "accepted"), response.text
    stored = await pipeline.stored_result(delivery_id)
    assert stored == (None if event == "ping" else "processed")


async def test_workflow_run_lands_field_by_field(pipeline: PipelineHarness) -> None:
    await pipeline.deliver("workflow_run", _body("workflow_run", "requested.payload.json"))
    run = await _one(pipeline, Run, Run.run_id == 289782451)
    assert (run.repository, run.status, run.display_status) == (
        "octo-org/octo-repo",
        "queued",
        "queued",
    )
    await pipeline.deliver("workflow_run", _body("workflow_run", "completed.payload.json"))
    run = await _one(pipeline, Run, Run.run_id == 289782451)
    assert run.status == "completed"
    assert run.conclusion == "success"
    assert run.display_status == "success"
    assert run.run_number == 163
    assert run.event == "repository_dispatch"
    assert run.branch == "master"
    assert run.head_sha == "3484a3fb816e0859fd6e1cea078d76385ff50625"
    assert run.actor == "Codertocat"
    assert run.commit_message == "build(test): check workflow run event payload"
    assert run.html_url == "https://github.com/octo-org/octo-repo/actions/runs/289782451"
    assert run.completed_at.isoformat() == "2020-10-05T16:33:49+00:00"
    assert run.duration_seconds == 0.0  # run_started_at == updated_at in this payload
    assert await _count(pipeline, LogLine, LogLine.run_pk == run.id) == 2


async def test_completed_run_never_goes_back(pipeline: PipelineHarness) -> None:
    await pipeline.deliver("workflow_run", _body("workflow_run", "completed.payload.json"))
    late = await pipeline.deliver("workflow_run", _body("workflow_run", "requested.payload.json"))
    assert late.status_code == 202
    run = await _one(pipeline, Run, Run.run_id == 289782451)
    assert (run.status, run.display_status) == ("completed", "success")


async def test_newer_attempt_supersedes(pipeline: PipelineHarness) -> None:
    completed = json.loads(_body("workflow_run", "completed.payload.json"))
    await pipeline.deliver("workflow_run", completed)
    retry = json.loads(_body("workflow_run", "requested.payload.json"))
    retry["workflow_run"]["run_attempt"] = 2
    retry["workflow_run"]["updated_at"] = "2020-10-05T17:00:00Z"
    await pipeline.deliver("workflow_run", retry)
    run = await _one(pipeline, Run, Run.run_id == 289782451)
    assert (run.run_attempt, run.status, run.conclusion) == (2, "queued", None)
    # ...and the first attempt's late events no longer apply.
    await pipeline.deliver("workflow_run", completed)
    run = await _one(pipeline, Run, Run.run_id == 289782451)
    assert (run.run_attempt, run.status) == (2, "queued")


async def test_workflow_job_lands_and_creates_its_run(pipeline: PipelineHarness) -> None:
    name = "completed.failure.with-organization.payload.json"
    assert (await pipeline.deliver("workflow_job", _body("workflow_job", name))).status_code == 202
    job = await _one(pipeline, Job, Job.job_id == 289782451)
    assert (job.name, job.status, job.conclusion) == ("linters", "completed", "failure")
    assert job.steps_count > 0
    run = await _one(pipeline, Run, Run.id == job.run_pk)
    assert (run.repository, run.run_id, run.status) == (
        "Codertocat/Hello-World",
        2202229078,
        "queued",
    )
    line = await _one(pipeline, LogLine, LogLine.run_pk == run.id)
    assert line.level == "error"
    assert "linters" in line.message


async def test_deployment_status_lands_with_history(pipeline: PipelineHarness) -> None:
    await pipeline.deliver("deployment", _body("deployment", "payload.json"))
    await pipeline.deliver("deployment_status", _body("deployment_status", "payload.json"))
    deployment = await _one(pipeline, Deployment, Deployment.deployment_id == 145988746)
    assert deployment.environment == "production"
    assert deployment.production is True  # by the configured environment names
    assert deployment.status == "success"
    assert deployment.sha == "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    assert deployment.succeeded_at.isoformat() == "2019-05-15T15:20:55+00:00"
    assert (
        await _count(pipeline, DeploymentStatus, DeploymentStatus.deployment_pk == deployment.id)
        == 1
    )


async def test_push_records_commits(pipeline: PipelineHarness) -> None:
    await pipeline.deliver("push", _body("push", "with-new-branch.payload.json"))
    change = await _one(pipeline, Change, Change.sha == "6113728f27ae82c7b1a177c8d03f9e96e0adf246")
    assert change.repository == "Codertocat/Hello-World"
    assert change.ref == "refs/heads/master"


async def test_redelivery_changes_nothing(pipeline: PipelineHarness) -> None:
    body = _body("workflow_run", "completed.payload.json")
    first = await pipeline.deliver("workflow_run", body, delivery_id="d-1")
    again = await pipeline.deliver("workflow_run", body, delivery_id="d-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["result"] == "duplicate"
    assert await _count(pipeline, Delivery) == 1
    assert await _count(pipeline, LogLine) == 1


async def test_unmapped_github_event_is_stored_and_ignored(pipeline: PipelineHarness) -> None:
    response = await pipeline.deliver("star", {"action": "created"})
    assert response.status_code == 202
    assert response.json()["result"] == "ignored"
    stored = await _one(pipeline, Delivery, Delivery.event == "star")
    assert stored.result == "ignored"


async def test_unmappable_payload_is_kept_with_its_error(pipeline: PipelineHarness) -> None:
    response = await pipeline.deliver("workflow_run", {"action": "completed", "workflow_run": {}})
    assert response.status_code == 202
    assert response.json()["result"] == "accepted"
    stored = await _one(pipeline, Delivery, Delivery.event == "workflow_run")
    assert stored.result == "failed"
    assert "missing field" in stored.error
    assert stored.body  # raw body kept for reprocessing


async def test_rotated_secret_still_verifies(pipeline: PipelineHarness) -> None:
    response = await pipeline.deliver(
        "workflow_run",
        _body("workflow_run", "completed.payload.json"),
        secret="an-older-secret-still-accepted-0000",
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("wrong_signature", 401, "invalid_signature"),
        ("missing_signature", 401, "invalid_signature"),
        ("missing_event", 400, "invalid_delivery"),
        ("missing_delivery", 400, "invalid_delivery"),
        ("invalid_json", 400, "invalid_delivery"),
        ("json_array", 400, "invalid_delivery"),
        ("unknown_event", 400, "invalid_delivery"),
        # Python's json raises RecursionError at ~1000 levels: measured first, never a 500.
        ("nested_too_deep", 400, "json_too_deep"),
        ("nested_100k_deep", 400, "json_too_deep"),
        ("unsigned_and_deep", 401, "invalid_signature"),
    ],
)
async def test_bad_deliveries_are_4xx_and_not_stored(
    pipeline: PipelineHarness, case: str, status: int, code: str
) -> None:
    body = _body("workflow_run", "completed.payload.json")
    kwargs: dict[str, Any] = {}
    event = "workflow_run"
    if case == "wrong_signature":
        kwargs["secret"] = "not-the-secret"
    elif case == "missing_signature":
        kwargs["headers"] = {"X-Hub-Signature-256": ""}
    elif case == "missing_event":
        event = ""
    elif case == "missing_delivery":
        kwargs["headers"] = {"X-GitHub-Delivery": ""}
    elif case == "invalid_json":
        body = b'{"action": '
    elif case == "json_array":
        body = b"[1, 2]"
    elif case == "unknown_event":
        event = "totally_made_up"
    elif case == "nested_too_deep":
        depth = pipeline.settings.webhook_max_json_depth
        body = b'{"action": ' + b"[" * depth + b"]" * depth + b"}"
    elif case == "nested_100k_deep":
        body = b"[" * 100_000
    elif case == "unsigned_and_deep":
        body = b"[" * 100_000
        kwargs["secret"] = "not-the-secret"
    response = await pipeline.deliver(event, body, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert await _count(pipeline, Delivery) == 0
    assert await _count(pipeline, Run) == 0


async def test_body_over_25_mb_is_413_and_not_stored(pipeline: PipelineHarness) -> None:
    response = await pipeline.deliver("workflow_run", b"x" * (26 * 1024 * 1024))
    assert response.status_code == 413
    assert await _count(pipeline, Delivery) == 0


async def test_fifty_concurrent_mixed_deliveries_make_one_run(
    pipeline_factory: Callable[..., Any],
) -> None:
    # All fifty at once in one process, with the default settings: none is refused.
    pipeline: PipelineHarness = await pipeline_factory()
    requested = json.loads(_body("workflow_run", "requested.payload.json"))
    in_progress = json.loads(_body("workflow_run", "requested.payload.json"))
    in_progress["action"] = "in_progress"
    in_progress["workflow_run"]["status"] = "in_progress"
    in_progress["workflow_run"]["updated_at"] = "2020-10-05T16:33:30Z"
    completed = json.loads(_body("workflow_run", "completed.payload.json"))
    kinds = [requested, in_progress, completed]
    # 20 distinct deliveries (mixed kinds), each sent 2-3 times, all at once, shuffled.
    deliveries = [(f"delivery-{i}", kinds[i % 3]) for i in range(20)]
    sends = [d for d in deliveries for _ in range(2)] + deliveries[:10]
    assert len(sends) == 50
    random.Random(7).shuffle(sends)
    responses = await asyncio.gather(
        *(
            pipeline.deliver("workflow_run", body, delivery_id=did, mapped=False)
            for did, body in sends
        )
    )
    assert all(r.status_code in (200, 202) for r in responses), [
        r.text for r in responses if r.status_code >= 300
    ]
    # Each delivery id accepted once, its copies answered as duplicates.
    assert sum(r.json()["result"] == "accepted" for r in responses) == 20
    await pipeline.drained()
    assert await _count(pipeline, Run) == 1
    run = await _one(pipeline, Run, Run.run_id == 289782451)
    assert (run.status, run.conclusion, run.display_status) == ("completed", "success", "success")
    assert await _count(pipeline, LogLine, LogLine.run_pk == run.id) == 20
    assert await _count(pipeline, Delivery) == 20


async def test_deliveries_are_kept_seven_days_then_purged(pipeline: PipelineHarness) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from flightdeck_common.db import utcnow
    from flightdeck_pipeline.webhooks.repository import DeliveryRepository

    await pipeline.deliver("push", _body("push", "payload.json"), delivery_id="old")
    await pipeline.deliver("push", _body("push", "payload.json"), delivery_id="recent")
    async with pipeline.app.state.resources.sessionmaker() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.delivery_id == "old")
            .values(received_at=utcnow() - timedelta(days=8))
        )
        await session.execute(
            update(Delivery)
            .where(Delivery.delivery_id == "recent")
            .values(received_at=utcnow() - timedelta(days=6))
        )
        assert await DeliveryRepository(session).purge_older_than(7) == 1
        await session.commit()
    remaining = await _one(pipeline, Delivery, Delivery.delivery_id == "recent")
    assert remaining.event == "push"


async def test_signature_failures_are_audited_and_counted(pipeline: PipelineHarness) -> None:
    from flightdeck_pipeline.outbox import OutboxEvent
    from flightdeck_pipeline.webhooks.rejection_audit import flush_rejections

    await pipeline.deliver("push", _body("push", "payload.json"), secret="wrong-secret")
    await pipeline.deliver("push", _body("push", "payload.json"))
    # Audited aggregated, once per source per interval (test_webhook_rejections.py).
    await flush_rejections(
        pipeline.app.state.resources.sessionmaker, pipeline.app.state.webhook_signature_rejections
    )
    rejected = await _one(
        pipeline, OutboxEvent, OutboxEvent.event_type == "pipeline.webhook.signature_rejected"
    )
    assert json.loads(rejected.payload)["data"]["events"] == {"push": 1}
    metrics = (await pipeline.client.get("/metrics")).text
    assert 'flightdeck_webhook_deliveries_total{event="push",result="accepted"}' in metrics
    assert 'flightdeck_webhook_mapped_total{event="push",result="processed"}' in metrics
    assert 'flightdeck_webhook_deliveries_total{event="push",result="rejected"}' in metrics
    assert "flightdeck_webhook_signature_failures_total" in metrics
    assert 'flightdeck_webhook_ingest_seconds_bucket{event="push"' in metrics


async def test_change_events_are_pruned_beyond_the_replay_bound(pipeline: PipelineHarness) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from flightdeck_common.db import utcnow
    from flightdeck_pipeline.events.models import ChangeEvent
    from flightdeck_pipeline.events.repository import ChangeEventRepository

    for i in range(5):
        body = json.loads(_body("workflow_run", "requested.payload.json"))
        body["workflow_run"]["id"] = 1000 + i
        await pipeline.deliver("workflow_run", body)
    async with pipeline.app.state.resources.sessionmaker() as session:
        await session.execute(update(ChangeEvent).values(created_at=utcnow() - timedelta(days=2)))
        latest = await ChangeEventRepository(session).latest_id()
        pruned = await ChangeEventRepository(session).prune(
            keep_last=2, older_than=utcnow() - timedelta(days=1)
        )
        await session.commit()
    assert pruned == 3
    assert await _count(pipeline, ChangeEvent) == 2
    assert (await _one(pipeline, ChangeEvent, ChangeEvent.id == latest)).kind == "run.updated"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda run: run.update(id=2**70),
        lambda run: run.update(run_number="seven"),
        lambda run: run.update(updated_at=10**20),
        lambda run: run.update(status="exploded"),
        lambda run: run.update(conclusion=["x"]),
        # run_attempt and run_number are 32-bit columns (asyncpg refuses larger arguments).
        lambda run: run.update(run_attempt=2**40),
        lambda run: run.update(run_number=-(2**31) - 1),
    ],
    ids=[
        "huge-id",
        "string-number",
        "huge-timestamp",
        "unknown-status",
        "list-conclusion",
        "huge-attempt",
        "huge-run-number",
    ],
)
async def test_hostile_payload_values_are_kept_as_failed_never_500(
    pipeline: PipelineHarness, mutate: Any
) -> None:
    body = json.loads(_body("workflow_run", "completed.payload.json"))
    mutate(body["workflow_run"])
    response = await pipeline.deliver("workflow_run", body, delivery_id="hostile")
    assert response.status_code == 202, response.text
    assert await pipeline.stored_result("hostile") == "failed"
    assert await _count(pipeline, Run) == 0


async def test_value_the_database_refuses_is_kept_as_failed(
    pipeline: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the database refuses a mapped value half-way through, everything the mapping
    wrote is rolled back and the delivery is kept, failed, with its error and raw body."""
    from sqlalchemy import exc as sa_exc

    from flightdeck_pipeline.runs.models import RunRollupAll
    from flightdeck_pipeline.runs.repository import RunRepository

    async def refused(self: Any, *args: Any, **kwargs: Any) -> None:
        raise sa_exc.DataError("INSERT INTO log_lines ...", {}, Exception("value too long"))

    monkeypatch.setattr(RunRepository, "add_log_line", refused)
    body = _body("workflow_run", "completed.payload.json")
    response = await pipeline.deliver("workflow_run", body, delivery_id="refused")
    assert (response.status_code, response.json()["result"]) == (202, "accepted")
    stored = await _one(pipeline, Delivery, Delivery.delivery_id == "refused")
    assert (stored.result, stored.body, stored.attempts) == ("failed", body, 1)
    assert "DataError" in stored.error
    assert await _count(pipeline, Run) == 0  # the run written before was rolled back
    assert await _count(pipeline, RunRollupAll, RunRollupAll.total != 0) == 0


async def test_unexpected_failure_keeps_the_delivery_pending_for_a_retry(
    pipeline: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a mapper is not the payload's fault: the delivery is not stored as failed;
    it stays pending with the error, is tried again later, and maps once the bug is gone."""
    from sqlalchemy import update

    from flightdeck_common.db import utcnow
    from flightdeck_pipeline.webhooks import worker

    async def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(worker, "apply_delivery", broken)
    body = _body("workflow_run", "completed.payload.json")
    response = await pipeline.deliver("workflow_run", body, delivery_id="unlucky")
    assert (response.status_code, response.json()["result"]) == (202, "accepted")
    stored = await _one(pipeline, Delivery, Delivery.delivery_id == "unlucky")
    assert (stored.result, stored.body, stored.attempts) == ("pending", body, 1)
    assert "RuntimeError: a bug" in stored.error
    assert stored.retry_at > utcnow()  # not taken again at once
    metrics = (await pipeline.client.get("/metrics")).text
    assert 'flightdeck_webhook_mapping_retries_total{reason="internal"}' in metrics
    monkeypatch.undo()
    async with pipeline.app.state.resources.sessionmaker() as session:
        await session.execute(update(Delivery).values(retry_at=utcnow()))
        await session.commit()
    await pipeline.drained()
    stored = await _one(pipeline, Delivery, Delivery.delivery_id == "unlucky")
    assert (stored.result, stored.error, stored.attempts) == ("processed", None, 2)
    assert await _count(pipeline, Run) == 1


async def test_redelivery_of_a_failed_delivery_is_mapped_again(pipeline: PipelineHarness) -> None:
    broken = {"action": "completed", "workflow_run": {}}
    first = await pipeline.deliver("workflow_run", broken, delivery_id="retry-me")
    assert first.json()["result"] == "accepted"
    assert await pipeline.stored_result("retry-me") == "failed"
    body = _body("workflow_run", "completed.payload.json")
    again = await pipeline.deliver("workflow_run", body, delivery_id="retry-me")
    assert (again.status_code, again.json()["result"]) == (202, "accepted")
    stored = await _one(pipeline, Delivery, Delivery.delivery_id == "retry-me")
    assert (stored.result, stored.error, stored.attempts) == ("processed", None, 2)
    duplicate = await pipeline.deliver("workflow_run", body, delivery_id="retry-me")
    assert (duplicate.status_code, duplicate.json()["result"]) == (200, "duplicate")
