"""``flightdeck-pipeline deliveries list|reprocess``: the deliveries API's rules from a
shell, on the service's database (seeded as rows; see test_deliveries_api.py for why the
reprocessed rows are asserted as "pending, or mapped again since")."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flightdeck_common.cli import run_cli
from flightdeck_common.testing.service_checks import run_service_cli
from flightdeck_pipeline.app import MIGRATIONS_DIR
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks import deliveries_service
from flightdeck_pipeline.webhooks.deliveries_cli import DELIVERIES
from flightdeck_pipeline.webhooks.models import Delivery

from ..conftest import PipelineHarness
from . import stored_deliveries
from .stored_deliveries import (
    NOT_BEFORE,
    RUN_BODY,
    SEEDED_AT,
    T0,
    UNMAPPABLE_RUN,
    audit_payloads,
    seed,
    seeded_delivery,
    stored,
)

LONG_ERROR = "MappingError: missing field: workflow_run.id\n" + "and much more " * 20


def _delivery(delivery_id: str, **fields: Any) -> Delivery:
    body = fields.pop("body", UNMAPPABLE_RUN)
    return seeded_delivery(delivery_id, body=body, error=LONG_ERROR, **fields)


def assert_reprocessed(row: Delivery) -> None:
    stored_deliveries.assert_reprocessed(row, LONG_ERROR)


def assert_untouched(row: Delivery, result: str) -> None:
    assert (row.result, row.processed_at) == (result, SEEDED_AT)


def _cli(settings: Settings, argv: list[str]) -> int:
    try:
        return run_cli(
            service="pipeline",
            default_port=8102,
            load_settings=lambda: settings,
            app_path="flightdeck_pipeline.app:create_app",
            migrations_dir=MIGRATIONS_DIR,
            argv=["deliveries", *argv],
            extra_commands=[DELIVERIES],
        )
    except SystemExit as exit_:  # argparse's usage errors
        return int(exit_.code or 0)


async def cli(harness: PipelineHarness, *argv: str) -> int:
    """Run the command in a thread of its own (it runs its own event loop, as from a shell)."""
    return await asyncio.to_thread(_cli, harness.settings, list(argv))


async def test_list_prints_a_table_newest_first(
    pipeline: PipelineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(
        pipeline,
        _delivery("11111111-aaaa", received_at=T0 - timedelta(days=1)),
        _delivery("22222222-bbbb", event="push", action=None, result="processed"),
        _delivery("33333333-cccc", result="pending"),
    )
    assert await cli(pipeline, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "DELIVERY",
        "ID",
        "EVENT",
        "ACTION",
        "RESULT",
        "ATTEMPTS",
        "RECEIVED",
        "AT",
        "ERROR",
    ]
    assert [line.split()[0] for line in lines[1:]] == [
        "33333333-cccc",
        "22222222-bbbb",
        "11111111-aaaa",
    ]
    failed = lines[3]
    assert failed.split()[1:6] == [
        "workflow_run",
        "completed",
        "failed",
        "1",
        (T0 - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    ]
    # The error on one line, truncated.
    assert "MappingError: missing field: workflow_run.id and much" in failed
    assert failed.endswith("...")
    assert len(failed) < 200
    pushed = lines[2].split()
    assert (pushed[2], pushed[-1]) == ("-", "-")  # no action, no error


async def test_list_filters_and_limits(
    pipeline: PipelineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(
        pipeline,
        *(_delivery(f"run-{n}") for n in range(3)),
        _delivery("push-1", event="push", received_at=T0 + timedelta(hours=1)),
        _delivery("done-1", result="processed"),
    )
    capsys.readouterr()

    async def listed(*argv: str) -> list[str]:
        assert await cli(pipeline, "list", *argv) == 0
        out = capsys.readouterr().out.splitlines()
        return [line.split()[0] for line in out[1:] if not line.startswith("(")]

    assert await listed("--result", "failed") == ["push-1", "run-2", "run-1", "run-0"]
    assert await listed("--event", "push") == ["push-1"]
    assert await listed("--since", (T0 + timedelta(minutes=1)).isoformat()) == ["push-1"]
    # A time without a zone is UTC.
    naive = (T0 + timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    assert await listed("--since", naive) == ["push-1"]
    assert await listed("--result", "failed", "--event", "workflow_run", "--limit", "2") == [
        "run-2",
        "run-1",
    ]
    assert await cli(pipeline, "list", "--limit", "2") == 0
    assert "only the newest 2 shown" in capsys.readouterr().out
    assert await cli(pipeline, "list", "--result", "ignored") == 0
    assert capsys.readouterr().out.strip() == "no deliveries match"


async def test_list_pages_past_the_api_page_size(
    pipeline: PipelineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(pipeline, *(_delivery(f"bulk-{n:03d}", result="processed") for n in range(205)))
    capsys.readouterr()
    assert await cli(pipeline, "list", "--limit", "300") == 0
    ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert ids == [f"bulk-{n:03d}" for n in reversed(range(205))]


async def test_reprocess_named_deliveries(
    pipeline: PipelineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(
        pipeline,
        _delivery("again-1"),
        _delivery("again-2", result="processed", body=RUN_BODY),
        _delivery("bystander"),
    )
    assert await cli(pipeline, "reprocess", "again-1", "again-2") == 0
    out = capsys.readouterr().out
    assert "delivery again-1 (workflow_run): pending again" in out
    assert "delivery again-2 (workflow_run): pending again" in out
    assert_reprocessed(await stored(pipeline, "again-1"))
    assert_reprocessed(await stored(pipeline, "again-2"))
    assert_untouched(await stored(pipeline, "bystander"), "failed")
    events = await audit_payloads(pipeline, "pipeline.webhook.delivery_reprocessed")
    assert sorted(
        (e["actor"], e["data"]["delivery_id"], e["data"]["previous_result"]) for e in events
    ) == [
        ("cli", "again-1", "failed"),
        ("cli", "again-2", "processed"),
    ]


async def test_reprocess_exits_1_for_unknown_or_pending_ones(
    pipeline: PipelineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(pipeline, _delivery("known"), _delivery("queued", result="pending"))
    assert await cli(pipeline, "reprocess", "nope", "known", "queued") == 1
    captured = capsys.readouterr()
    assert "'nope'" in captured.err
    assert "'queued'" in captured.err
    assert "already waiting" in captured.err
    # The others are reprocessed all the same.
    assert "delivery known (workflow_run): pending again" in captured.out
    assert_reprocessed(await stored(pipeline, "known"))
    queued = await stored(pipeline, "queued")
    assert (queued.result, queued.retry_at) == ("pending", NOT_BEFORE)
    assert await cli(pipeline, "reprocess", "nope") == 1


async def test_reprocess_failed_by_filters(
    pipeline: PipelineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(
        pipeline,
        _delivery("old-run", received_at=T0 - timedelta(days=1)),
        _delivery("run-a"),
        _delivery("push-a", event="push"),
        _delivery("run-done", result="processed"),
    )
    since = (T0 - timedelta(hours=1)).isoformat()
    assert (
        await cli(pipeline, "reprocess", "--failed", "--event", "workflow_run", "--since", since)
        == 0
    )
    assert "1 failed deliveries set back to pending" in capsys.readouterr().out
    assert_reprocessed(await stored(pipeline, "run-a"))
    assert_untouched(await stored(pipeline, "old-run"), "failed")
    assert_untouched(await stored(pipeline, "push-a"), "failed")
    assert_untouched(await stored(pipeline, "run-done"), "processed")
    [event] = await audit_payloads(pipeline, "pipeline.webhook.deliveries_reprocessed")
    assert (event["actor"], event["data"]["count"]) == ("cli", 1)
    assert event["data"]["filter"]["event"] == "workflow_run"

    assert await cli(pipeline, "reprocess", "--result", "processed") == 0
    assert "1 processed deliveries set back to pending" in capsys.readouterr().out
    assert_reprocessed(await stored(pipeline, "run-done"))


async def test_reprocess_refuses_more_than_the_bound(
    pipeline: PipelineHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliveries_service, "MAX_BULK_REPROCESS", 1)
    await seed(pipeline, _delivery("m-1"), _delivery("m-2"))
    assert await cli(pipeline, "reprocess", "--failed") == 1
    assert "2 deliveries match, more than 1 per call" in capsys.readouterr().err
    assert_untouched(await stored(pipeline, "m-1"), "failed")
    assert_untouched(await stored(pipeline, "m-2"), "failed")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["reprocess"],  # neither ids nor --failed
        ["reprocess", "abc", "--failed"],
        ["reprocess", "abc", "--event", "push"],  # filters select with --failed only
        ["reprocess", "--failed", "--result", "processed"],
        ["reprocess", "--result", "pending"],
        ["reprocess", "not a delivery id"],
        ["reprocess", "x" * 65],
        ["reprocess", "--failed", "--since", "yesterday"],
        ["reprocess", "--failed", "--since", "2026-12-02", "--until", "2026-12-01"],
        ["list", "--result", "bogus"],
        ["list", "--event", "Bad-Event"],
        ["list", "--limit", "0"],
        ["list", "--limit", "many"],
        ["list", "--since", "0001-01-01T00:00:00+14:00"],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before the database is opened (there is none here).
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}", log_json=False
    )
    assert _cli(settings, argv) == 2
    assert "usage:" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()


def test_help_says_the_worker_polls() -> None:
    parser = argparse.ArgumentParser()
    DELIVERIES.add_arguments(parser)
    assert "poll for pending deliveries every second" in " ".join(parser.description.split())


async def test_the_installed_command_runs_against_the_database(
    pipeline: PipelineHarness, tmp_path: Path
) -> None:
    """Through ``python -m flightdeck_pipeline.cli``, configured from the environment."""
    await seed(pipeline, _delivery("real-process"), _delivery("still-pending", result="pending"))
    env = {"FLIGHTDECK_PIPELINE_DATABASE_URL": pipeline.settings.database_url}
    listed = await asyncio.to_thread(
        run_service_cli,
        "pipeline",
        "deliveries",
        "list",
        "--result",
        "failed",
        env=env,
        cwd=tmp_path,
    )
    assert listed.returncode == 0, listed.stderr
    assert "real-process" in listed.stdout
    assert "still-pending" not in listed.stdout
    done = await asyncio.to_thread(
        run_service_cli,
        "pipeline",
        "deliveries",
        "reprocess",
        "real-process",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert_reprocessed(await stored(pipeline, "real-process"))
    refused = await asyncio.to_thread(
        run_service_cli,
        "pipeline",
        "deliveries",
        "reprocess",
        "still-pending",
        env=env,
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    usage = await asyncio.to_thread(
        run_service_cli, "pipeline", "deliveries", "reprocess", env=env, cwd=tmp_path
    )
    assert usage.returncode == 2
