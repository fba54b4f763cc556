"""Liveness and readiness probes with pluggable checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flightdeck_common.errors import PROBLEM_JSON
from flightdeck_common.health import DATABASE_CHECK, REDIS_CHECK, ReadinessCheck, run_checks
from flightdeck_common.resources import Resources

UNREACHABLE_DB = "postgresql+asyncpg://dbuser-x9:s3cr3t-pw@127.0.0.1:1/flightdeck"


async def readiness_gauge(client: Any, check: str) -> float | None:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "flightdeck_readiness_check_up":
            for sample in family.samples:
                if sample.labels == {"check": check}:
                    return float(sample.value)
    return None


async def test_healthz_is_always_ok(start_service: Any, make_settings: Any) -> None:
    service = await start_service(
        settings=make_settings(database_url=UNREACHABLE_DB, migrate_on_start=False)
    )
    response = await service.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_with_sqlite_is_ready(start_service: Any) -> None:
    service = await start_service()
    response = await service.client.get("/readyz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database"}  # no Redis configured, so no Redis check
    database = body["checks"]["database"]
    assert database["status"] == "ok"
    assert database["critical"] is True
    assert database["latency_ms"] >= 0
    assert await readiness_gauge(service.client, "database") == 1.0


async def test_readyz_with_unreachable_database_is_a_503_problem(
    start_service: Any, make_settings: Any, json_logs: list[dict[str, Any]]
) -> None:
    service = await start_service(
        settings=make_settings(
            database_url=UNREACHABLE_DB,
            migrate_on_start=False,
            readiness_timeout_seconds=2.0,
            database_connect_timeout_seconds=1.0,
        )
    )
    response = await service.client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["code"] == "not_ready"
    assert "database" in body["detail"]
    assert body["checks"]["database"]["status"] == "down"
    assert body["checks"]["database"]["error"]
    assert body["request_id"] == response.headers["x-request-id"]
    for secret in ("s3cr3t-pw", "dbuser-x9"):
        assert secret not in response.text
    assert await readiness_gauge(service.client, "database") == 0.0
    # A failing probe is not quiet in the access log.
    [access] = [
        line
        for line in json_logs
        if line["logger"] == "flightdeck.access" and line["http_path"] == "/readyz"
    ]
    assert access["level"] == "info"
    assert access["http_status"] == 503


async def test_slow_check_times_out(start_service: Any, make_settings: Any) -> None:
    # The timeout leaves the real database check ample time on a loaded machine (0.05 s
    # once failed it there), while the hanging check is cut off long before it ends.
    async def hang(resources: Resources) -> None:
        await asyncio.sleep(10)

    service = await start_service(
        settings=make_settings(readiness_timeout_seconds=0.75),
        readiness_checks=(DATABASE_CHECK, ReadinessCheck("search", hang)),
    )
    response = await service.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["search"] == {
        "status": "down",
        "error": "no answer within 0.75 s",
        "critical": True,
        "latency_ms": body["checks"]["search"]["latency_ms"],
    }
    assert 700 <= body["checks"]["search"]["latency_ms"] < 5000
    assert body["detail"].startswith("search unavailable")
    assert "0.75 s" in body["detail"]


async def test_failing_non_critical_check_only_degrades(start_service: Any) -> None:
    async def broken(resources: Resources) -> None:
        raise ConnectionError("cache is down\nsecond line is dropped")

    service = await start_service(
        readiness_checks=(DATABASE_CHECK, ReadinessCheck("cache", broken, critical=False))
    )
    response = await service.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["status"] == "down"
    assert body["checks"]["cache"]["critical"] is False
    assert body["checks"]["cache"]["error"] == "ConnectionError: cache is down"


async def test_error_reports_the_root_cause(start_service: Any) -> None:
    async def wrapped(resources: Resources) -> None:
        try:
            raise OSError("connection refused by 10.0.0.5")
        except OSError as exc:
            raise RuntimeError("postgresql://user:pw@10.0.0.5/db failed") from exc

    service = await start_service(readiness_checks=(ReadinessCheck("wrapped", wrapped),))
    body = (await service.client.get("/readyz")).json()
    assert body["checks"]["wrapped"]["error"] == "OSError: connection refused by 10.0.0.5"
    assert "user:pw" not in str(body)


async def test_unreachable_redis_degrades_but_stays_ready(
    start_service: Any, make_settings: Any
) -> None:
    service = await start_service(settings=make_settings(redis_url="redis://127.0.0.1:1/0"))
    response = await service.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["redis"]["critical"] is False


async def test_checks_run_concurrently(make_settings: Any, build_app: Any) -> None:
    async def slow(resources: Resources) -> None:
        await asyncio.sleep(0.2)

    app = build_app()
    async with app.router.lifespan_context(app):
        started = asyncio.get_running_loop().time()
        results = await run_checks(
            app.state.resources,
            [ReadinessCheck(f"slow{i}", slow) for i in range(5)],
            timeout_seconds=2.0,
        )
        elapsed = asyncio.get_running_loop().time() - started
    assert {r["status"] for r in results.values()} == {"ok"}
    assert elapsed < 0.7  # one after the other would take 1.0 s


def test_builtin_checks() -> None:
    assert DATABASE_CHECK.name == "database"
    assert DATABASE_CHECK.critical is True
    assert REDIS_CHECK.name == "redis"
    assert REDIS_CHECK.critical is False


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_only_answer_get(start_service: Any, path: str) -> None:
    service = await start_service()
    assert (await service.client.post(path)).status_code == 405
