"""Per-secret repositories: a secret may write only the repositories it names."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from flightdeck_pipeline.deployments.models import Deployment, DeploymentStatus, Incident
from flightdeck_pipeline.runs.models import Job, Run
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks.models import Delivery

from ..conftest import WEBHOOK_SECRET, fixture_body

PipelineHarness = Any
ORG_SECRET = "secret-of-octo-org-only-0123456789abcdef"
REPO_SECRET = "secret-of-one-repository-0123456789abcd"
ROTATED_REPO_SECRET = "rotated-secret-of-one-repository-000000"


def _run_of(repository: str) -> dict[str, Any]:
    body = json.loads(fixture_body("workflow_run", "completed.payload.json"))
    body["repository"]["full_name"] = repository
    return body


async def _count(harness: PipelineHarness, model: Any) -> int:
    async with harness.app.state.resources.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
async def scoped(pipeline_factory: Callable[..., Any]) -> PipelineHarness:
    secrets = (
        f"{ORG_SECRET}@octo-org/*,"
        f"{REPO_SECRET}@Other-Org/repo-x|third/one,"
        f"{ROTATED_REPO_SECRET}@other-org/repo-x,"
        f"{WEBHOOK_SECRET}"
    )
    return await pipeline_factory(github_webhook_secrets=secrets)


async def test_secret_for_an_owner_writes_it_and_is_refused_elsewhere(
    scoped: PipelineHarness,
) -> None:
    accepted = await scoped.deliver(
        "workflow_run", _run_of("octo-org/octo-repo"), secret=ORG_SECRET
    )
    assert accepted.status_code == 202, accepted.text
    refused = await scoped.deliver("workflow_run", _run_of("other-org/repo-x"), secret=ORG_SECRET)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "repository_not_allowed"
    assert await _count(scoped, Delivery) == 1  # the refused one was not stored
    assert await _count(scoped, Run) == 1
    metrics = (await scoped.client.get("/metrics")).text
    assert 'flightdeck_webhook_repository_refusals_total{reason="repository_not_allowed"}' in (
        metrics
    )
    assert 'flightdeck_webhook_deliveries_total{event="workflow_run",result="forbidden"}' in (
        metrics
    )


async def test_exact_repository_and_its_rotation(scoped: PipelineHarness) -> None:
    # Names match case-insensitively, as on GitHub; both secrets of the rotation work.
    for secret in (REPO_SECRET, ROTATED_REPO_SECRET):
        response = await scoped.deliver("workflow_run", _run_of("other-org/Repo-X"), secret=secret)
        assert response.status_code == 202, response.text
    other = await scoped.deliver("workflow_run", _run_of("other-org/repo-y"), secret=REPO_SECRET)
    assert other.status_code == 403


async def test_unrestricted_secret_writes_any_repository(scoped: PipelineHarness) -> None:
    for repository in ("octo-org/octo-repo", "anyone/anything"):
        response = await scoped.deliver("workflow_run", _run_of(repository))
        assert response.status_code == 202, response.text


async def test_restricted_secret_needs_a_repository_for_mapped_events(
    scoped: PipelineHarness,
) -> None:
    body = _run_of("octo-org/octo-repo")
    del body["repository"]
    response = await scoped.deliver("workflow_run", body, secret=ORG_SECRET)
    assert (response.status_code, response.json()["code"]) == (403, "repository_not_allowed")
    # A lookalike name is not under the owner.
    sneaky = await scoped.deliver(
        "workflow_run", _run_of("octo-org/../other-org/repo-x"), secret=ORG_SECRET
    )
    assert sneaky.status_code == 403
    ping = await scoped.deliver("ping", fixture_body("ping"), secret=ORG_SECRET)
    assert ping.status_code == 200


def test_plain_comma_separated_list_still_means_any_repository() -> None:
    settings = Settings(github_webhook_secrets="new-secret, old-secret")
    assert [s.get_secret_value() for s in settings.github_webhook_secrets] == [
        "new-secret",
        "old-secret",
    ]
    assert all(s.repositories is None for s in settings.github_webhook_secrets)


@pytest.mark.parametrize(
    "value",
    ["s3cret@", "p@ssword-with-an-at-sign", "s@org/*|", "s@*/*", "@org/*", "same,same@org/*"],
)
def test_ambiguous_configuration_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(github_webhook_secrets=value)
    message = str(refused.value)
    assert "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS" in message
    assert value not in message


def test_production_checks_the_secret_without_its_repositories() -> None:
    with pytest.raises(ValidationError, match="must be at least 32 characters"):
        Settings(
            environment="production",
            github_webhook_secrets="short@octo-org/a-very-long-repository-name-here",
            service_client_secret="a-service-client-secret-of-enough-length",
        )


def _issue_of(repository: str) -> dict[str, Any]:
    return {
        "action": "opened",
        "issue": {
            "number": 7,
            "title": "checkout is down",
            "state": "open",
            "labels": [{"name": "incident"}],
            "created_at": "2026-12-01T10:00:00Z",
            "updated_at": "2026-12-01T10:00:00Z",
            "closed_at": None,
        },
        "repository": {"full_name": repository},
    }


def _fixture_of(event: str, repository: str) -> dict[str, Any]:
    name = "in_progress.payload.json" if event == "workflow_job" else "payload.json"
    body = json.loads(fixture_body(event, name))
    body["repository"]["full_name"] = repository
    return body


@pytest.mark.parametrize(
    ("event", "model"),
    [
        ("workflow_job", Job),
        ("deployment", Deployment),
        ("deployment_status", DeploymentStatus),
        ("issues", Incident),
    ],
)
async def test_deployments_incidents_and_jobs_are_scoped_like_runs(
    scoped: PipelineHarness, event: str, model: Any
) -> None:
    def body(repository: str) -> dict[str, Any]:
        return _issue_of(repository) if event == "issues" else _fixture_of(event, repository)

    refused = await scoped.deliver(event, body("other-org/repo-x"), secret=ORG_SECRET)
    assert (refused.status_code, refused.json()["code"]) == (403, "repository_not_allowed")
    assert await _count(scoped, model) == 0
    assert await _count(scoped, Delivery) == 0
    accepted = await scoped.deliver(event, body("octo-org/octo-repo"), secret=ORG_SECRET)
    assert accepted.status_code == 202, accepted.text
    assert await _count(scoped, model) >= 1
