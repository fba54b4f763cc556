"""The stats/history/DORA routes in-process: auth, validation, and the cache (in-process and
through Redis, shared by replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from flightdeck_common.auth.dependencies import AuthContext, install_auth
from flightdeck_common.auth.testing import TokenMinter
from flightdeck_common.auth.verifier import TokenVerifier
from flightdeck_common.db import utcnow
from flightdeck_common.devstack.ports import free_port
from flightdeck_common.redis_client import create_redis
from flightdeck_common.resources import Resources
from flightdeck_common.service_app import ServiceSpec, create_service_app
from flightdeck_common.testing.service_checks import bearer, running_app
from flightdeck_pipeline.db import Base
from flightdeck_pipeline.metrics.cache import MetricsCache
from flightdeck_pipeline.metrics.router import router
from flightdeck_pipeline.metrics.schemas import RunStats
from flightdeck_pipeline.settings import Settings

from .computations import Answer, Counter, cache_count, cached_body
from .conftest import add_runs, make_run

TITLE = "Flightdeck Pipelines (metrics test)"


@dataclass
class MetricsApp:
    app: FastAPI
    client: httpx.AsyncClient
    headers: dict[str, str]

    @property
    def cache(self) -> MetricsCache:
        cache: MetricsCache = self.app.state.metrics_cache
        return cache

    async def add_run(self, repository: str = "acme/api") -> None:
        resources: Resources = self.app.state.resources
        async with resources.sessionmaker.begin() as session:
            await add_runs(session, [make_run(repository, utcnow(), "success", 12.5)])


@contextlib.asynccontextmanager
async def metrics_app(database_url: str, redis_url: str | None) -> AsyncIterator[MetricsApp]:
    settings = Settings(database_url=database_url, redis_url=redis_url, log_json=False)
    minter = TokenMinter()

    @contextlib.asynccontextmanager
    async def setup(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
        async with resources.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        install_auth(app, AuthContext(TokenVerifier(minter.key_source(), minter.issuer)))
        app.state.metrics_cache = MetricsCache(resources.redis, ttl_seconds=60)
        yield

    spec = ServiceSpec(
        title=TITLE,
        description="Metrics routes only.",
        version="0.0.0",
        routers=[router],
        lifespan_hooks=[setup],
    )
    app = create_service_app(settings, spec)
    async with running_app(app) as client:
        yield MetricsApp(app, client, bearer(minter.user_token()))


@pytest.fixture(params=["sqlite", "postgresql+redis"])
async def metrics_client(request: pytest.FixtureRequest) -> AsyncIterator[MetricsApp]:
    """The metrics routes on SQLite with the in-process cache, or PostgreSQL with Redis."""
    if request.param == "sqlite":
        urls = (request.getfixturevalue("sqlite_database_url"), None)
    else:
        urls = (
            request.getfixturevalue("postgres_database_url"),
            request.getfixturevalue("redis_url"),
        )
    async with metrics_app(*urls) as harness:
        yield harness


async def test_metrics_routes_need_a_token(metrics_client: MetricsApp) -> None:
    for path in ("/pipelines/stats", "/pipelines/history?days=0", "/pipelines/dora"):
        response = await metrics_client.client.get(path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "invalid_token"


@pytest.mark.parametrize(
    "query",
    [
        "/pipelines/history?days=0",
        "/pipelines/history?days=91",
        "/pipelines/dora?window_days=0",
        "/pipelines/dora?window_days=366",
        "/pipelines/stats?since=2026-03-01T00:00:00",  # no offset: ambiguous
        "/pipelines/stats?since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z",
        "/pipelines/stats?" + "&".join(f"repository=o/r{i}" for i in range(51)),
    ],
)
async def test_metrics_routes_refuse_invalid_queries(sqlite_database_url: str, query: str) -> None:
    async with metrics_app(sqlite_database_url, None) as harness:
        response = await harness.client.get(query, headers=harness.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


class CountingSessions:
    """A sessionmaker that counts the sessions it opens."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.opened = inner, 0

    def __call__(self) -> Any:
        self.opened += 1
        return self.inner()


async def test_metrics_routes_answer_and_cache(metrics_client: MetricsApp) -> None:
    client, headers = metrics_client.client, metrics_client.headers
    await metrics_client.add_run("acme/api")
    hits, misses = cache_count("stats", "hit"), cache_count("stats", "miss")
    resources: Resources = metrics_client.app.state.resources
    sessions = CountingSessions(resources.read_sessionmaker or resources.sessionmaker)
    resources.read_sessionmaker = sessions  # type: ignore[assignment]

    first = await client.get("/pipelines/stats", headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["total"] == 1
    # One duration: its bucket's midpoint, within 5 % of it (the histogram estimate).
    assert first.json()["p50_duration_seconds"] == pytest.approx(12.5, rel=0.05)

    # A write the cache was not told about: the cached answer is served.
    await metrics_client.add_run("acme/web")
    repeat = await client.get("/pipelines/stats", headers=headers)
    assert repeat.content == first.content  # the stored bytes, served as they are
    assert repeat.headers["content-type"] == "application/json"
    # Those bytes are the response model's own serialization (FastAPI no longer checks).
    assert RunStats.model_validate_json(repeat.content).model_dump_json().encode() == (
        repeat.content
    )
    assert cache_count("stats", "miss") == misses + 1
    assert cache_count("stats", "hit") == hits + 1
    assert sessions.opened == 1  # a hit opens no session; the computation opened one

    # Invalidated (as every write path does after committing): a fresh answer.
    await metrics_client.cache.invalidate()
    fresh = await client.get("/pipelines/stats", headers=headers)
    assert fresh.json()["total"] == 2
    assert cache_count("stats", "miss") == misses + 2

    # Other parameters are other entries.
    api_only = await client.get("/pipelines/stats?repository=acme/api", headers=headers)
    assert api_only.json()["total"] == 1
    assert api_only.json()["repositories"] == ["acme/api"]


async def test_metrics_routes_history_and_dora(metrics_client: MetricsApp) -> None:
    client, headers = metrics_client.client, metrics_client.headers
    await metrics_client.add_run("acme/api")

    history = await client.get("/pipelines/history?days=3", headers=headers)
    assert history.status_code == 200, history.text
    body = history.json()
    assert (body["days"], body["per_repository"]) == (3, False)
    assert [item["total"] for item in body["items"]] == [0, 0, 1]  # zero-filled, today last

    per_repo = await client.get(
        "/pipelines/history?days=2&per_repository=true&repository=acme/api", headers=headers
    )
    assert [(i["repository"], i["total"]) for i in per_repo.json()["items"]] == [
        ("acme/api", 0),
        ("acme/api", 1),
    ]

    dora = await client.get(
        "/pipelines/dora?window_days=7&repository=acme/web&repository=acme/api"
        "&environment=Production",
        headers=headers,
    )
    assert dora.status_code == 200, dora.text
    report = dora.json()
    assert report["repositories"] == ["acme/api", "acme/web"]
    assert report["environments"] == ["production"]
    assert report["production_environments"] == ["prod", "production"]
    assert report["deployment_frequency"] == {
        "deployments": 0,
        "days_with_deployment": 0,
        "per_day": 0.0,
        "band": None,
    }
    assert report["change_failure_rate"]["rate"] is None


async def test_metrics_routes_documented(sqlite_database_url: str) -> None:
    async with metrics_app(sqlite_database_url, None) as harness:
        schema = (await harness.client.get("/pipelines/openapi.json")).json()
    operations = {
        path: schema["paths"][path]["get"]
        for path in ("/pipelines/stats", "/pipelines/history", "/pipelines/dora")
    }
    assert [op["operationId"] for op in operations.values()] == [
        "read_stats",
        "read_history",
        "read_dora",
    ]
    for operation in operations.values():
        assert {"200", "401", "403", "422"} <= set(operation["responses"])
        assert operation["tags"] == ["metrics"]
        assert operation["summary"]


async def test_metrics_cache_shared_by_replicas_through_redis(redis_url: str) -> None:
    first, second = create_redis(redis_url), create_redis(redis_url)
    try:
        replica_a, replica_b = MetricsCache(first, 60), MetricsCache(second, 60)
        compute = Counter()
        assert await replica_a.get_or_compute("stats", {"x": 1}, compute) == cached_body(1)
        # The other replica reads the same entry...
        assert await replica_b.get_or_compute("stats", {"x": 1}, compute) == cached_body(1)
        assert compute.calls == 1
        # ...and sees an invalidation made by the first one.
        await replica_a.invalidate()
        assert await replica_b.get_or_compute("stats", {"x": 1}, compute) == cached_body(2)
        assert await replica_a.get_or_compute("stats", {"x": 1}, compute) == cached_body(2)
        assert await replica_a.get_or_compute("stats", {"x": 2}, compute) == cached_body(3)
    finally:
        await first.aclose()
        await second.aclose()


async def test_metrics_cache_hit_through_redis_is_one_round_trip(redis_url: str) -> None:
    redis = create_redis(redis_url)
    commands: list[str] = []
    execute = redis.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return await execute(*args, **options)

    try:
        cache, compute = MetricsCache(redis, 60), Counter()
        await cache.invalidate()  # a generation of this test's own
        assert await cache.get_or_compute("stats", {"one": "trip"}, compute) == cached_body(1)
        redis.execute_command = counted  # type: ignore[method-assign]
        for _ in range(3):
            assert await cache.get_or_compute("stats", {"one": "trip"}, compute) == cached_body(1)
        # The generation and its entry, read together by the lookup script.
        assert commands == ["EVALSHA"] * 3
        assert compute.calls == 1
    finally:
        await redis.aclose()


async def test_metrics_cache_ignores_an_unreadable_entry(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis = create_redis(redis_url)
    try:
        cache, compute = MetricsCache(redis, 60), Counter()
        await cache.invalidate()
        assert await cache.get_or_compute("history", {"bad": 1}, compute) == cached_body(1)
        generation = int(await redis.get("flightdeck:pipeline:metrics:generation:runs") or 0)
        pattern = f"flightdeck:pipeline:metrics:runs:{generation}:history:*"
        entries = [key async for key in redis.scan_iter(pattern)]
        assert len(entries) == 1
        await redis.set(entries[0], b"<html>not an answer</html>", ex=60)
        with caplog.at_level(logging.WARNING, logger="flightdeck_pipeline.metrics.cache"):
            assert await cache.get_or_compute("history", {"bad": 1}, compute) == cached_body(2)
        assert any("unreadable" in r.getMessage() for r in caplog.records)
        assert await redis.get(entries[0]) == cached_body(2)  # replaced by the new answer
    finally:
        await redis.aclose()


async def test_metrics_cache_computes_when_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        cache = MetricsCache(dead, 60)
        compute = Counter()
        errors = cache_count("history", "error")
        with caplog.at_level(logging.WARNING, logger="flightdeck_pipeline.metrics.cache"):
            for expected in (1, 2, 3):
                answer = await cache.get_or_compute("history", {}, compute)
                assert answer == cached_body(expected)
            await cache.invalidate()  # does not raise either
        assert cache_count("history", "error") == errors + 3
        warnings = [r for r in caplog.records if r.name == "flightdeck_pipeline.metrics.cache"]
        assert len(warnings) == 1  # logged once for the outage
    finally:
        await dead.aclose()


async def test_metrics_cache_in_process_ttl_and_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("flightdeck_pipeline.metrics.cache.time.monotonic", lambda: clock[0])
    cache, compute = MetricsCache(None, 30), Counter()
    assert await cache.get_or_compute("dora", {"w": 30}, compute) == cached_body(1)
    clock[0] += 29
    assert await cache.get_or_compute("dora", {"w": 30}, compute) == cached_body(1)
    clock[0] += 2  # past the TTL
    assert await cache.get_or_compute("dora", {"w": 30}, compute) == cached_body(2)

    disabled, compute = MetricsCache(None, 0), Counter()
    for expected in (1, 2):
        assert await disabled.get_or_compute("dora", {}, compute) == cached_body(expected)


class SlowCounter(Counter):
    """Counts computations and the most running at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0

    async def __call__(self) -> Answer:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.02)
            return await super().__call__()
        finally:
            self.running -= 1


@pytest.mark.parametrize("with_redis", [False, True])
async def test_metrics_cache_computes_a_burst_of_one_question_at_most_once_per_slot(
    with_redis: bool, request: pytest.FixtureRequest
) -> None:
    redis = create_redis(request.getfixturevalue("redis_url")) if with_redis else None
    try:
        cache, compute = MetricsCache(redis, 60, max_concurrent=2), SlowCounter()
        if redis is not None:
            await cache.invalidate()  # a generation of this test's own
        answers = await asyncio.gather(
            *(cache.get_or_compute("dora", {"burst": 1}, compute) for _ in range(20))
        )
        # At most the two first in line compute; the 18 waiting find the answer cached
        # after them. Through Redis the second one's look before computing is a round
        # trip of its own, which on a loaded machine can land after the first has stored
        # its answer: then it computes nothing and the burst costs one computation.
        # (Unbounded, the 20 would all compute.)
        if with_redis:
            assert 1 <= compute.calls <= 2
        else:
            assert compute.calls == 2
        assert set(answers) <= {cached_body(1), cached_body(2)}
    finally:
        if redis is not None:
            await redis.aclose()


async def test_metrics_cache_bounds_computations_running_at_once() -> None:
    uncached, compute = MetricsCache(None, 0, max_concurrent=3), SlowCounter()
    answers = await asyncio.gather(
        *(uncached.get_or_compute("stats", {}, compute) for _ in range(12))
    )
    assert sorted(json.loads(a)["value"] for a in answers) == list(range(1, 13))  # each computed
    assert compute.most == 3
