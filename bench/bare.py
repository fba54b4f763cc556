"""The bare reference: one ASGI callable, no framework, no middleware, asyncpg pools.

Each route runs the same SQL as the pipeline/auth endpoint it stands for (what SQLAlchemy
emits there, written out) and answers with ``json.dumps`` of the rows, so the ratio
stack / bare shows what FastAPI, pydantic, SQLAlchemy, middleware, auth and Traefik cost
on top of the database work. Served by uvicorn like the services:

    BENCH_PIPELINE_DSN=... BENCH_AUTH_DSN=... BENCH_REDIS_URL=... BENCH_WEBHOOK_SECRET=... \
        python -m uvicorn bench.bare:create_app --factory --port 18110 --no-access-log

Routes: ``/health`` (no SQL), ``/runs`` (``cursor``, ``status``, ``repository``),
``/runs/<id>``, ``/stats``, ``/history`` (``days``), ``/dora`` (``window_days``), each of
the last three also as ``/cached/...`` (Redis generation + entry, like the metrics cache),
``POST /login`` (argon2id verify of the stored hash, 2 at a time like the service),
``POST /webhook`` (HMAC check, delivery stored raw, run upserted, log line, change event)
and ``GET /events`` (the live stream of change events, fed like the service's: see
``BareApp.events``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import argon2
import asyncpg  # type: ignore[import-untyped]
from redis.asyncio import Redis

# The service's cache lookup script, and its percentile estimate from the duration
# histogram (a pure function).
from flightdeck_pipeline.metrics.cache import LOOKUP_SCRIPT
from flightdeck_pipeline.metrics.stats import estimate_percentile

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

RUN_COLUMNS = (
    "id, repository, run_id, run_attempt, run_number, workflow_name, name, event, status, "
    "status_rank, conclusion, display_status, branch, head_sha, commit_message, actor, "
    "html_url, started_at, completed_at, duration_seconds, source, source_updated_at, "
    "created_at, updated_at"
)
JOB_COLUMNS = (
    "id, run_pk, job_id, name, status, status_rank, conclusion, runner_name, steps_count, "
    "run_attempt, started_at, completed_at, html_url, source_updated_at, updated_at"
)
STATUSES = ("queued", "running", "success", "failed", "cancelled")
PRODUCTION = "(d.production IS true OR lower(d.environment) IN ('prod', 'production'))"
APPEND_LOCK_KEY = 0x6664_6368_616E_6765  # the pipeline's change-event writer lock

# Stats and history read the daily rollups the pipeline maintains on write (the unfiltered
# scenarios: the all-repositories tables), as the service does.
ROLLUP_COUNTS = ("total", "queued", "running", "success", "failed", "cancelled")
STATS_COUNTS = (
    "SELECT "
    + ", ".join(f"coalesce(sum({c}), 0)" for c in (*ROLLUP_COUNTS, "durations", "duration_sum_us"))
    + " FROM run_rollups_all"
)
STATS_HISTOGRAM = """
SELECT bucket, sum(runs) FROM run_duration_rollups_all
GROUP BY bucket HAVING sum(runs) > 0 ORDER BY bucket
"""
HISTORY = """
SELECT to_char(day, 'YYYY-MM-DD'), sum(total), sum(success), sum(failed)
FROM run_rollups_all WHERE day >= $1 AND day <= $2 AND total <> 0
GROUP BY day
"""
_SUCCEEDED = "(d.succeeded_at >= $1 AND d.succeeded_at < $2)"
_FAILED = "(d.succeeded_at IS NULL AND d.failed_at >= $1 AND d.failed_at < $2)"
DORA_DEPLOYMENTS = f"""
SELECT count(*) FILTER (WHERE {_SUCCEEDED}),
    count(DISTINCT CASE WHEN {_SUCCEEDED}
          THEN to_char(timezone('UTC', d.succeeded_at), 'YYYY-MM-DD') END),
    count(*) FILTER (WHERE {_FAILED}),
    count(*) FILTER (WHERE {_SUCCEEDED} AND attributed.deployment_pk IS NOT NULL)
FROM deployments AS d
LEFT OUTER JOIN (SELECT DISTINCT deployment_pk FROM incidents
                 WHERE deployment_pk IS NOT NULL) AS attributed
    ON attributed.deployment_pk = d.id
WHERE {PRODUCTION} AND ({_SUCCEEDED} OR {_FAILED})
"""
DORA_LEAD_TIME = f"""
WITH deployed AS (
    SELECT d.repository, d.succeeded_at, c.pushed_at AS deployed_push_at
    FROM deployments AS d JOIN changes AS c ON c.repository = d.repository AND c.sha = d.sha
    WHERE {PRODUCTION} AND d.succeeded_at IS NOT NULL AND d.succeeded_at < $2
), bounds AS (
    SELECT repository,
        max(deployed_push_at) FILTER (WHERE NOT (succeeded_at >= $1)) AS before_push,
        max(deployed_push_at) FILTER (WHERE succeeded_at >= $1) AS window_push
    FROM deployed GROUP BY repository
)
SELECT count(v), avg(v), percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM (
    SELECT CAST(round(CAST(EXTRACT(epoch FROM first_deployed_at - committed) AS numeric), 3)
                AS float8) AS v
    FROM (
        SELECT kind, committed,
               min(succeeded_at) OVER (PARTITION BY repository
                                       ORDER BY pushed_at DESC, kind
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                   AS first_deployed_at
        FROM (
            SELECT repository, deployed_push_at AS pushed_at, 0 AS kind, succeeded_at,
                   NULL::timestamptz AS committed
            FROM deployed WHERE succeeded_at >= $1
            UNION ALL
            SELECT commit.repository, commit.pushed_at, 1, NULL::timestamptz,
                   coalesce(commit.committed_at, commit.authored_at, commit.pushed_at)
            FROM changes AS commit JOIN bounds ON bounds.repository = commit.repository
            WHERE commit.pushed_at <= bounds.window_push
              AND (bounds.before_push IS NULL OR commit.pushed_at > bounds.before_push)
        ) AS merged
    ) AS first_deployments
    WHERE kind = 1
) AS summarized
"""
DORA_INCIDENTS = "SELECT count(*) FROM incidents WHERE opened_at >= $1 AND opened_at < $2"
DORA_RECOVERY = """
SELECT count(v), avg(v), percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM (
    SELECT CAST(round(CAST(EXTRACT(epoch FROM resolved_at - opened_at) AS numeric), 3)
                AS float8) AS v
    FROM incidents
    WHERE opened_at >= $1 AND opened_at < $2 AND resolved_at IS NOT NULL
) AS summarized
"""
LOGIN_USER = "SELECT id, username, password_hash, role, is_active FROM users WHERE username = $1"
# Stored raw in a commit of its own, then mapped in a second one (the service before it
# mapped behind the acknowledgement). Not 'pending' in between: the pipeline's mapping
# worker polls the same table and would claim the delivery and map it too.
STORE_DELIVERY = """
INSERT INTO deliveries (delivery_id, event, action, body, received_at, result, attempts)
VALUES ($1, $2, $3, $4, now(), 'bare-mapping', 0) ON CONFLICT (delivery_id) DO NOTHING
"""
UPSERT_RUN = """
INSERT INTO runs (repository, run_id, run_attempt, run_number, workflow_name, name, event,
    status, status_rank, conclusion, display_status, branch, head_sha, commit_message, actor,
    html_url, started_at, completed_at, duration_seconds, source, source_updated_at,
    created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    'github', $20, $21, now())
ON CONFLICT (repository, run_id) DO UPDATE SET
    run_attempt = excluded.run_attempt, status = excluded.status,
    status_rank = excluded.status_rank, conclusion = excluded.conclusion,
    display_status = excluded.display_status, completed_at = excluded.completed_at,
    duration_seconds = excluded.duration_seconds, source_updated_at = excluded.source_updated_at,
    updated_at = excluded.updated_at,
    started_at = coalesce(excluded.started_at, runs.started_at)
WHERE excluded.run_attempt > runs.run_attempt
   OR (excluded.run_attempt = runs.run_attempt AND (excluded.status_rank > runs.status_rank
       OR (excluded.status_rank = runs.status_rank
           AND (runs.source_updated_at IS NULL OR excluded.source_updated_at IS NULL
                OR excluded.source_updated_at >= runs.source_updated_at))))
"""
RUN_PK = "SELECT id FROM runs WHERE repository = $1 AND run_id = $2"
ADD_LOG_LINE = """
INSERT INTO log_lines (run_pk, level, message, logged_at, delivery_id)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (delivery_id) DO NOTHING
"""
APPEND_CHANGE = (
    "INSERT INTO change_events (kind, payload, created_at) VALUES ('run.updated', $1, now()) "
    "RETURNING id"
)
LATEST_CHANGE = "SELECT coalesce(max(id), 0) FROM change_events"
CHANGES_AFTER = "SELECT id, kind, payload FROM change_events WHERE id > $1 ORDER BY id LIMIT $2"
CHANGES_BATCH = 500  # the service's FETCH_BATCH_SIZE
FINISH_DELIVERY = """
UPDATE deliveries SET result = 'processed', error = NULL, processed_at = now(),
    attempts = attempts + 1
WHERE delivery_id = $1
"""


class NotFound(Exception):
    pass


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str, separators=(",", ":")).encode()


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return datetime.fromisoformat(raw[0]["dt"]), int(raw[1])


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class BareApp:
    def __init__(self) -> None:
        self.pipeline: asyncpg.Pool | None = None
        self.auth: asyncpg.Pool | None = None
        self.redis: Redis | None = None
        self.secret = os.environ.get("BENCH_WEBHOOK_SECRET", "").encode()
        self.hasher = argon2.PasswordHasher()
        self.hash_pool = ThreadPoolExecutor(max_workers=2)  # the service's bound
        # The change bus of the process: a generation bumped, and an event set, per commit.
        self.generation = 0
        self.changed = asyncio.Event()

    async def startup(self) -> None:
        # The services' SQLAlchemy pools: 10 connections + 10 overflow.
        self.pipeline = await asyncpg.create_pool(
            os.environ["BENCH_PIPELINE_DSN"], min_size=2, max_size=20
        )
        self.auth = await asyncpg.create_pool(os.environ["BENCH_AUTH_DSN"], min_size=1, max_size=20)
        self.redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])

    async def shutdown(self) -> None:
        for pool in (self.pipeline, self.auth):
            if pool is not None:
                await pool.close()
        if self.redis is not None:
            await self.redis.aclose()
        self.hash_pool.shutdown(wait=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/events":
            await self.events(receive, send)
            return
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        body = b""
        if scope["method"] == "POST":
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
        try:
            status, answer = await self.route(path, query, body, scope)
        except NotFound:
            status, answer = 404, b'{"detail":"not found"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def route(
        self, path: str, query: dict[str, str], body: bytes, scope: Scope
    ) -> tuple[int, bytes]:
        if path == "/health":
            return 200, b'{"status":"ok"}'
        if path == "/runs":
            return 200, _json(await self.list_runs(query))
        if path.startswith("/runs/"):
            return 200, _json(await self.read_run(int(path.removeprefix("/runs/"))))
        if path.startswith("/cached/"):
            name = path.removeprefix("/cached/")
            return 200, await self.cached(name, query)
        if path in ("/stats", "/history", "/dora"):
            return 200, _json(await self.metric(path.lstrip("/"), query))
        if path == "/login" and scope["method"] == "POST":
            return await self.login(body)
        if path == "/webhook" and scope["method"] == "POST":
            return await self.webhook(body, dict(scope["headers"]))
        raise NotFound

    async def list_runs(self, query: dict[str, str]) -> dict[str, Any]:
        assert self.pipeline is not None
        where: list[str] = []
        args: list[Any] = []
        for column, name in (("display_status", "status"), ("repository", "repository")):
            if name in query:
                args.append(query[name])
                where.append(f"{column} = ${len(args)}")
        if "cursor" in query:
            created_at, pk = _decode_cursor(query["cursor"])
            args += [created_at, pk]
            n = len(args)
            where.append(
                f"created_at <= ${n - 1} "
                f"AND (created_at < ${n - 1} OR (created_at = ${n - 1} AND id < ${n}))"
            )
        limit = 50
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY created_at DESC, id DESC LIMIT {limit + 1}"
        )
        rows = await self.pipeline.fetch(sql, *args)
        items = [dict(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            raw = json.dumps([{"dt": last["created_at"].isoformat()}, last["id"]]).encode()
            next_cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"items": items, "next_cursor": next_cursor}

    async def read_run(self, pk: int) -> dict[str, Any]:
        assert self.pipeline is not None
        async with self.pipeline.acquire() as connection:
            run = await connection.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1", pk)
            if run is None:
                raise NotFound
            jobs = await connection.fetch(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE run_pk = $1 ORDER BY run_attempt, job_id",
                pk,
            )
        return {**dict(run), "jobs": [dict(job) for job in jobs]}

    async def metric(self, name: str, query: dict[str, str]) -> dict[str, Any]:
        assert self.pipeline is not None
        async with self.pipeline.acquire() as connection:
            if name == "stats":
                counts = await connection.fetchrow(STATS_COUNTS)
                histogram = [
                    (row[0], int(row[1])) for row in await connection.fetch(STATS_HISTOGRAM)
                ]
                durations, duration_sum_us = counts[-2], counts[-1]
                return {**dict(zip(ROLLUP_COUNTS, counts[:6], strict=True)),
                        "mean": int(duration_sum_us) / int(durations) / 1e6 if durations else None,
                        "p50": estimate_percentile(histogram, 0.5),
                        "p95": estimate_percentile(histogram, 0.95)}  # fmt: skip
            if name == "history":
                days = int(query.get("days", "7"))
                today = datetime.now(UTC).date()
                series = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
                rows = {
                    row[0]: row[1:]
                    for row in await connection.fetch(HISTORY, series[0], series[-1])
                }
                return {"items": [_history_day(day, rows) for day in series]}
            window = int(query.get("window_days", "30"))
            until = datetime.now(UTC)
            since = until - timedelta(days=window)
            deployments = await connection.fetchrow(DORA_DEPLOYMENTS, since, until)
            lead = await connection.fetchrow(DORA_LEAD_TIME, since, until)
            opened = await connection.fetchval(DORA_INCIDENTS, since, until)
            recovery = await connection.fetchrow(DORA_RECOVERY, since, until)
            return {
                "deployments": list(deployments),
                "lead_time": list(lead),
                "incidents_opened": opened,
                "recovery": list(recovery),
            }

    async def cached(self, name: str, query: dict[str, str]) -> bytes:
        """Like the metrics cache with Redis: the generation and its entry in one round
        trip (the same Lua script), the stored bytes served as they are."""
        assert self.redis is not None
        after = f":{name}:{sorted(query.items())}"
        generation, cached = await self.redis.eval(
            LOOKUP_SCRIPT, 1, "bench:bare:generation", "bench:bare:", after
        )
        key = f"bench:bare:{int(generation)}{after}"
        if cached is not None:
            return cached if isinstance(cached, bytes) else cached.encode()
        answer = _json(await self.metric(name, query))
        await self.redis.set(key, answer, ex=60)
        return answer

    async def login(self, body: bytes) -> tuple[int, bytes]:
        assert self.auth is not None
        credentials = json.loads(body)
        user = await self.auth.fetchrow(LOGIN_USER, credentials["username"])
        if user is None or not user["is_active"]:
            return 401, b'{"detail":"bad credentials"}'
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.hash_pool, self.hasher.verify, user["password_hash"], credentials["password"]
            )
        except argon2.exceptions.VerificationError:
            return 401, b'{"detail":"bad credentials"}'
        return 200, _json({"user": {"id": user["id"], "username": user["username"]}})

    async def webhook(self, body: bytes, headers: dict[bytes, bytes]) -> tuple[int, bytes]:
        assert self.pipeline is not None
        presented = headers.get(b"x-hub-signature-256", b"")
        expected = b"sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest().encode()
        if not self.secret or not hmac.compare_digest(expected, presented):
            return 401, b'{"detail":"invalid signature"}'
        delivery_id = headers.get(b"x-github-delivery", b"").decode()
        event = headers.get(b"x-github-event", b"").decode()
        payload = json.loads(body)
        run = payload["workflow_run"]
        repository = payload["repository"]["full_name"]
        async with self.pipeline.acquire() as connection:
            async with connection.transaction():
                stored = await connection.execute(
                    STORE_DELIVERY, delivery_id, event, payload.get("action"), body
                )
            if stored.endswith(" 0"):
                return 200, _json({"delivery_id": delivery_id, "result": "duplicate"})
            updated_at = _parse_time(run.get("updated_at"))
            started_at = _parse_time(run.get("run_started_at"))
            completed = run["status"] == "completed"
            conclusion = run.get("conclusion") if completed else None
            display = (
                ("success" if conclusion in ("success", "neutral") else "failed")
                if completed
                else "running"
            )
            duration = (
                max(0.0, (updated_at - started_at).total_seconds())
                if completed and updated_at and started_at
                else None
            )
            async with connection.transaction():
                await connection.execute(
                    UPSERT_RUN, repository, run["id"], run.get("run_attempt") or 1,
                    run.get("run_number"), run.get("name"), run.get("display_title"),
                    run.get("event"), run["status"], 2 if completed else 1, conclusion,
                    display, run.get("head_branch"), run.get("head_sha"),
                    (run.get("head_commit") or {}).get("message"),
                    (run.get("triggering_actor") or {}).get("login"), run.get("html_url"),
                    started_at, updated_at if completed else None, duration, updated_at,
                    _parse_time(run.get("created_at")),
                )  # fmt: skip
                run_pk = await connection.fetchval(RUN_PK, repository, run["id"])
                await connection.execute(
                    ADD_LOG_LINE, run_pk, "success", f"workflow run {run.get('name')}: completed",
                    updated_at, delivery_id,
                )  # fmt: skip
                await connection.execute(FINISH_DELIVERY, delivery_id)
                # The change event is written last, under the writers' lock, like the service.
                await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
                # Its payload is the run as the API shows it (the service reads it back too).
                current = await connection.fetchrow(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1", run_pk
                )
                await connection.fetchval(APPEND_CHANGE, _json(dict(current)).decode())
        self.wake()  # after the commit, like the service's bus.notify
        return 202, _json({"delivery_id": delivery_id, "event": event, "result": "processed"})

    def wake(self) -> None:
        self.generation += 1
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    async def events(self, receive: Receive, send: Send) -> None:
        """The service's stream without the framework: start at the newest change; on each
        wake-up, read what follows with a short pool checkout and send each event. The
        service also publishes each commit on Redis for other replicas (off the request
        path) and polls max(id) once a second: neither is done here."""
        assert self.pipeline is not None
        cursor = int(await self.pipeline.fetchval(LATEST_CHANGE))
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        pump = asyncio.create_task(self._pump(send, cursor))
        while (await receive())["type"] != "http.disconnect":
            pass
        pump.cancel()

    async def _pump(self, send: Send, cursor: int) -> None:
        assert self.pipeline is not None
        body = f"retry: 3000\nid: {cursor}\n\n".encode()
        await send({"type": "http.response.body", "body": body, "more_body": True})
        while True:
            generation = self.generation
            rows = await self.pipeline.fetch(CHANGES_AFTER, cursor, CHANGES_BATCH)
            for change_id, kind, payload in rows:
                cursor = change_id
                body = f"id: {change_id}\nevent: {kind}\ndata: {payload}\n\n".encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if len(rows) < CHANGES_BATCH and generation == self.generation:
                await self.changed.wait()


def _history_day(day: date, rows: dict[str, Any]) -> dict[str, Any]:
    total, successful, failed = rows.get(day.isoformat(), (0, 0, 0))
    return {"day": day.isoformat(), "total": total, "successful": successful, "failed": failed}


def create_app() -> BareApp:
    """uvicorn factory (``--factory``)."""
    return BareApp()
