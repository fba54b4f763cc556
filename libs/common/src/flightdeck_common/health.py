"""Liveness (``/healthz``) and readiness (``/readyz``) with pluggable checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from flightdeck_common.db import ping
from flightdeck_common.errors import problem_response
from flightdeck_common.metrics import READINESS
from flightdeck_common.resources import Resources
from flightdeck_common.shutdown import DRAINING


@dataclass(frozen=True)
class ReadinessCheck:
    """A named probe. A failing critical check makes the service not ready;
    a failing non-critical one (e.g. Redis) only reports the service degraded."""

    name: str
    probe: Callable[[Resources], Awaitable[None]]
    critical: bool = True


async def _database(resources: Resources) -> None:
    # Its own connection, not one from the request pool (see db.create_probe_engine).
    await ping(resources.probe_engine or resources.engine)


async def _redis(resources: Resources) -> None:
    if resources.redis is not None:
        await resources.redis.ping()


DATABASE_CHECK = ReadinessCheck("database", _database)
REDIS_CHECK = ReadinessCheck("redis", _redis, critical=False)


async def run_checks(
    resources: Resources, checks: Sequence[ReadinessCheck], timeout_seconds: float
) -> dict[str, dict[str, Any]]:
    async def run(check: ReadinessCheck) -> tuple[str, dict[str, Any]]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(check.probe(resources), timeout_seconds)
            result: dict[str, Any] = {"status": "ok"}
        except TimeoutError:
            result = {"status": "down", "error": f"no answer within {timeout_seconds:g} s"}
        except Exception as exc:
            result = {"status": "down", "error": _describe(exc)}
        result["critical"] = check.critical
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        READINESS.labels(check.name).set(1 if result["status"] == "ok" else 0)
        return check.name, result

    return dict(await asyncio.gather(*(run(c) for c in checks)))


def _describe(exc: BaseException) -> str:
    # Root cause without connection strings or other secrets.
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).splitlines()[0][:200] if str(root) else ""
    return f"{type(root).__name__}: {text}" if text else type(root).__name__


def health_router(checks: Sequence[ReadinessCheck]) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        resources: Resources = request.app.state.resources
        if DRAINING.is_set():
            return problem_response(
                503,
                code="draining",
                title="Service stopping",
                detail="This instance received a stop signal and is draining.",
                headers={"Cache-Control": "no-store"},
            )
        active = [c for c in checks if c is not REDIS_CHECK or resources.redis is not None]
        results = await run_checks(resources, active, resources.settings.readiness_timeout_seconds)
        failed = [n for n, r in results.items() if r["status"] != "ok" and r["critical"]]
        if failed:
            detail = "; ".join(f"{n} unavailable ({results[n].get('error')})" for n in failed)
            return problem_response(
                503,
                code="not_ready",
                title="Service not ready",
                detail=detail,
                extra={"checks": results},
                headers={"Cache-Control": "no-store"},
            )
        degraded = any(r["status"] != "ok" for r in results.values())
        return JSONResponse(
            {"status": "degraded" if degraded else "ready", "checks": results},
            headers={"Cache-Control": "no-store"},
        )

    return router
