"""The metrics cache is invalidated by scope: a write makes stale only the answers that
read what it wrote (runs for stats and history; deployments, commits and incidents for
DORA), in process and through Redis, and through the webhook receiver and the APIs."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from flightdeck_common.auth.claims import Role
from flightdeck_common.redis_client import create_redis
from flightdeck_pipeline.metrics.cache import DEPLOYMENTS, RUNS, MetricsCache

from ..conftest import PipelineHarness, fixture_body
from .computations import Counter, cache_count


async def value(cache: MetricsCache, name: str, compute: Counter) -> int:
    answer: int = json.loads(await cache.get_or_compute(name, {}, compute))["value"]
    return answer


@pytest.mark.parametrize("with_redis", [False, True])
async def test_invalidating_a_scope_drops_only_its_answers(
    with_redis: bool, request: pytest.FixtureRequest
) -> None:
    redis = create_redis(request.getfixturevalue("redis_url")) if with_redis else None
    try:
        cache, compute = MetricsCache(redis, 60), Counter()
        await cache.invalidate()
        assert [await value(cache, name, compute) for name in ("stats", "history", "dora")] == [
            1,
            2,
            3,
        ]

        await cache.invalidate(RUNS)  # a workflow run or job was written
        assert await value(cache, "stats", compute) == 4
        assert await value(cache, "history", compute) == 5
        assert await value(cache, "dora", compute) == 3  # still cached

        await cache.invalidate(DEPLOYMENTS)  # a deployment, push or incident
        assert await value(cache, "dora", compute) == 6
        assert await value(cache, "stats", compute) == 4  # still cached

        await cache.invalidate()  # every scope
        assert await value(cache, "stats", compute) == 7
        assert await value(cache, "dora", compute) == 8

        with pytest.raises(ValueError, match="scopes"):
            await cache.invalidate("jobs")
        with pytest.raises(ValueError, match="scope"):
            await cache.get_or_compute("lead-time", {}, compute)
    finally:
        if redis is not None:
            await redis.aclose()


async def test_a_second_replica_sees_a_scoped_invalidation(redis_url: str) -> None:
    first, second = create_redis(redis_url), create_redis(redis_url)
    try:
        replica_a, replica_b, compute = MetricsCache(first, 60), MetricsCache(second, 60), Counter()
        await replica_a.invalidate()
        assert await value(replica_a, "stats", compute) == 1
        assert await value(replica_a, "dora", compute) == 2
        await replica_b.invalidate(DEPLOYMENTS)
        assert await value(replica_a, "stats", compute) == 1
        assert await value(replica_a, "dora", compute) == 3
    finally:
        await first.aclose()
        await second.aclose()


async def test_deliveries_make_stale_only_what_they_wrote(pipeline: PipelineHarness) -> None:
    await pipeline.app.state.metrics_cache.invalidate()
    headers = pipeline.headers()

    async def ask(path: str) -> dict[str, Any]:
        response = await pipeline.client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    total = (await ask("/pipelines/stats"))["total"]
    await ask("/pipelines/dora")

    # A new workflow run: stats answers with it at once, DORA is served from the cache.
    run = json.loads(fixture_body("workflow_run", "completed.payload.json"))
    run["workflow_run"]["id"] = random.randrange(10**9, 10**10)
    assert (await pipeline.deliver("workflow_run", run)).status_code == 202
    dora_hits, dora_misses = cache_count("dora", "hit"), cache_count("dora", "miss")
    assert (await ask("/pipelines/stats"))["total"] == total + 1
    await ask("/pipelines/dora")
    assert (cache_count("dora", "hit"), cache_count("dora", "miss")) == (dora_hits + 1, dora_misses)

    # A deployment: DORA is computed again, stats is served from the cache.
    assert (await pipeline.deliver("deployment", fixture_body("deployment"))).status_code == 202
    stats_hits, dora_misses = cache_count("stats", "hit"), cache_count("dora", "miss")
    await ask("/pipelines/dora")
    assert cache_count("dora", "miss") == dora_misses + 1
    assert (await ask("/pipelines/stats"))["total"] == total + 1
    assert cache_count("stats", "hit") == stats_hits + 1

    # A push (commits) and an incident are DORA's too.
    for event, body in (
        ("push", fixture_body("push")),
        ("issues", incident_issue()),
    ):
        assert (await pipeline.deliver(event, body, delivery_id=event)).status_code == 202
        assert await pipeline.stored_result(event) == "processed", event
        dora_misses, stats_hits = cache_count("dora", "miss"), cache_count("stats", "hit")
        await ask("/pipelines/dora")
        await ask("/pipelines/stats")
        assert cache_count("dora", "miss") == dora_misses + 1, event
        assert cache_count("stats", "hit") == stats_hits + 1, event


def incident_issue() -> dict[str, Any]:
    """An ``issues`` delivery the receiver maps to an incident (the incident label)."""
    return {
        "action": "opened",
        "issue": {
            "number": 7,
            "title": "checkout is down",
            "html_url": "https://github.com/octo-org/octo-repo/issues/7",
            "state": "open",
            "created_at": "2026-11-20T10:00:00Z",
            "closed_at": None,
            "labels": [{"name": "incident"}],
        },
        "repository": {"full_name": "octo-org/octo-repo"},
    }


async def test_api_writes_make_stale_only_what_they_wrote(pipeline: PipelineHarness) -> None:
    await pipeline.app.state.metrics_cache.invalidate()
    viewer, operator = pipeline.headers(), pipeline.headers(Role.OPERATOR)

    async def stats_and_dora() -> tuple[int, int]:
        stats = await pipeline.client.get("/pipelines/stats", headers=viewer)
        dora = await pipeline.client.get("/pipelines/dora", headers=viewer)
        assert (stats.status_code, dora.status_code) == (200, 200)
        return stats.json()["total"], dora.json()["deployment_frequency"]["deployments"]

    assert await stats_and_dora() == (0, 0)
    reported = await pipeline.client.post(
        "/pipelines", json={"repository": "acme/shop", "run_id": 1}, headers=operator
    )
    assert reported.status_code == 201, reported.text
    dora_hits = cache_count("dora", "hit")
    assert await stats_and_dora() == (1, 0)
    assert cache_count("dora", "hit") == dora_hits + 1

    deployed = await pipeline.client.post(
        "/pipelines/deployments",
        json={"repository": "acme/shop", "environment": "production", "sha": "abc123"},
        headers=operator,
    )
    assert deployed.status_code == 201, deployed.text
    stats_hits = cache_count("stats", "hit")
    assert await stats_and_dora() == (1, 1)
    assert cache_count("stats", "hit") == stats_hits + 1


async def test_an_api_write_answers_once_the_cache_is_told(pipeline: PipelineHarness) -> None:
    """Read-your-writes: the invalidation runs after the commit and before the response,
    however long it takes (it used to be a task that could run after the next read)."""
    cache = pipeline.app.state.metrics_cache
    told: list[tuple[str, ...]] = []
    invalidate = cache.invalidate

    async def slow_invalidate(*scopes: str) -> None:
        await asyncio.sleep(0.2)
        await invalidate(*scopes)
        told.append(scopes)

    cache.invalidate = slow_invalidate
    operator = pipeline.headers(Role.OPERATOR)
    reported = await pipeline.client.post(
        "/pipelines", json={"repository": "acme/shop", "run_id": 2}, headers=operator
    )
    assert reported.status_code == 201, reported.text
    assert told == [(RUNS,)]

    moved = await pipeline.client.patch(
        f"/pipelines/{reported.json()['id']}",
        json={"status": "in_progress"},
        headers=operator,
    )
    assert moved.status_code == 200, moved.text
    opened = await pipeline.client.post(
        "/pipelines/incidents",
        json={"repository": "acme/shop", "title": "5xx spike"},
        headers=operator,
    )
    assert opened.status_code == 201, opened.text
    assert told == [(RUNS,), (RUNS,), (DEPLOYMENTS,)]

    # A write that fails tells nothing: nothing was committed.
    refused = await pipeline.client.patch(
        f"/pipelines/{reported.json()['id']}", json={"status": "queued"}, headers=operator
    )
    assert refused.status_code == 409, refused.text
    assert len(told) == 3
