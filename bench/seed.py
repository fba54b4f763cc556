"""Seed the pipeline database straight with SQL (``generate_series``), not through the API.

The shape follows the pipeline service's tables (``services/pipeline/migrations``), after
the migrations ran:

- ``runs``: N runs over the last 90 days (ids in time order, as GitHub's are), 200
  repositories with a skewed load (a few busy ones, a long tail), ~80% success, 12%
  failure, the rest cancelled/skipped/timed out; the last 20 minutes still queued/running;
- ``jobs``: 1-5 per run (3 on average); ``log_lines``: 1-19 per run (10 on average);
- ``changes`` (pushed commits, for lead time): 3 per deployment;
- ``deployments``: 20,000 at 1M runs (scaled with N), half to production, each of a
  pushed commit, with their ``deployment_statuses``;
- ``incidents``: 500 at 1M runs (scaled), 90% resolved, attributed like the service does
  (latest successful production deployment of the repository before the incident).

``runs.duration_bucket`` is computed in the same ``INSERT`` with the service's bucket SQL,
and the daily rollups that stats and history read (``run_rollups`` and friends) are
recomputed after the load by the service's own ``rebuild_rollups`` (the SQL of
``flightdeck-pipeline rebuild-rollups``), as if every run had been written through it.

Secondary indexes of the big tables are dropped during the load and rebuilt after it,
foreign-key triggers are skipped (``session_replication_role = replica``; the data is
consistent by construction), and everything is analyzed at the end. ``random()`` is
seeded, so two seeds of the same size give the same data (timestamps are relative to now).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from flightdeck_pipeline.runs.duration_buckets import duration_bucket_sql
from flightdeck_pipeline.runs.rollups import rebuild_rollups

REPOSITORIES = 200
DAYS = 90
DEPLOYMENTS_PER_MILLION = 20_000
INCIDENTS_PER_MILLION = 500
COMMITS_PER_DEPLOYMENT = 3
RANDOM_SEED = 0.42

# Repository k (0..199): 20 organisations, skewed choice floor(200 * u^2) (repo 0 busiest).
REPOSITORY_EXPR = (
    "'org-' || lpad(({k} % 20)::text, 2, '0') || '/service-' || lpad(({k})::text, 3, '0')"
)
SKEWED_REPO = f"floor({REPOSITORIES} * random() ^ 2)::int"

BIG_TABLES = ("runs", "jobs", "log_lines")
ROLLUP_TABLES = (
    "run_rollups",
    "run_rollups_all",
    "run_duration_rollups",
    "run_duration_rollups_all",
)


@dataclass(frozen=True)
class SeedPlan:
    runs: int
    deployments: int
    incidents: int
    commits: int

    @classmethod
    def for_runs(cls, runs: int) -> SeedPlan:
        deployments = max(1, round(DEPLOYMENTS_PER_MILLION * runs / 1_000_000))
        incidents = max(1, round(INCIDENTS_PER_MILLION * runs / 1_000_000))
        return cls(runs, deployments, incidents, deployments * COMMITS_PER_DEPLOYMENT)


@dataclass
class SeedReport:
    plan: SeedPlan
    seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


RUNS_SQL = f"""
INSERT INTO runs (id, repository, run_id, run_attempt, run_number, workflow_name, name, event,
    status, status_rank, conclusion, display_status, branch, head_sha, commit_message, actor,
    html_url, started_at, completed_at, duration_seconds, duration_bucket, source,
    source_updated_at, created_at, updated_at)
SELECT g, repository, 10000000000 + g, attempt, 1 + g / {REPOSITORIES},
    workflow, workflow, event,
    status, CASE status WHEN 'queued' THEN 0 WHEN 'in_progress' THEN 1 ELSE 2 END,
    conclusion,
    CASE WHEN status = 'queued' THEN 'queued'
         WHEN status = 'in_progress' THEN 'running'
         WHEN conclusion IN ('success', 'neutral') THEN 'success'
         WHEN conclusion IN ('cancelled', 'skipped', 'stale') THEN 'cancelled'
         ELSE 'failed' END,
    branch, md5('run' || g) || left(md5('sha' || g), 8),
    (ARRAY['Fix flaky retry in the upload client', 'Bump dependencies',
           'Add pagination to the export endpoint', 'Refactor settings loading',
           'Merge pull request #' || (g % 5000) || ' from feature/search-filters',
           'Update CI cache keys', 'Speed up the integration suite',
           'Document the release process'])[1 + g % 8],
    'user-' || lpad((floor(500 * u_actor ^ 1.5))::int::text, 3, '0'),
    'https://github.com/' || repository || '/actions/runs/' || (10000000000 + g),
    CASE WHEN status <> 'queued' THEN started END,
    CASE WHEN status = 'completed' THEN started + duration * interval '1 second' END,
    CASE WHEN status = 'completed' THEN round(duration::numeric, 3)::float8 END,
    CASE WHEN status = 'completed'
         THEN {duration_bucket_sql("round(duration::numeric, 3)::float8", "postgresql")} END,
    'github',
    CASE WHEN status = 'completed' THEN started + duration * interval '1 second'
         ELSE created END,
    created,
    CASE WHEN status = 'completed' THEN started + duration * interval '1 second'
         ELSE created END
FROM (
    SELECT g, {REPOSITORY_EXPR.format(k="r")} AS repository,
        CASE WHEN u_attempt < 0.05 THEN 2 ELSE 1 END AS attempt,
        (ARRAY['CI', 'CI', 'CI', 'Lint', 'Deploy', 'Nightly', 'Release', 'CodeQL'])[1 + g % 8]
            AS workflow,
        CASE WHEN u_event < 0.70 THEN 'push' WHEN u_event < 0.95 THEN 'pull_request'
             ELSE 'schedule' END AS event,
        CASE WHEN created > now() - interval '20 minutes'
             THEN (CASE WHEN u_status < 0.4 THEN 'queued' ELSE 'in_progress' END)
             ELSE 'completed' END AS status,
        CASE WHEN created > now() - interval '20 minutes' THEN NULL
             WHEN u_status < 0.80 THEN 'success' WHEN u_status < 0.92 THEN 'failure'
             WHEN u_status < 0.97 THEN 'cancelled' WHEN u_status < 0.98 THEN 'skipped'
             WHEN u_status < 0.99 THEN 'timed_out' ELSE 'neutral' END AS conclusion,
        CASE WHEN u_branch < 0.5 THEN 'main'
             ELSE 'feature/change-' || (floor(2000 * u_branch))::int END AS branch,
        u_actor, created,
        created + (2 + 60 * u_queue) * interval '1 second' AS started,
        30 + 1500 * u_duration ^ 3 AS duration
    FROM (
        SELECT g, {SKEWED_REPO} AS r, random() AS u_attempt, random() AS u_event,
            random() AS u_status, random() AS u_branch, random() AS u_actor,
            random() AS u_queue, random() AS u_duration,
            now() - interval '{DAYS} days'
                + (g::float8 / $1::int) * interval '{DAYS} days'
                - random() * interval '60 seconds' AS created
        FROM generate_series(1, $1::int) AS g
    ) AS draws
) AS run
"""

JOBS_SQL = """
INSERT INTO jobs (run_pk, job_id, name, status, status_rank, conclusion, runner_name,
    steps_count, run_attempt, started_at, completed_at, html_url, source_updated_at, updated_at)
SELECT r.id, r.run_id * 10 + k,
    (ARRAY['build', 'test', 'lint', 'e2e', 'deploy'])[k],
    r.status, r.status_rank,
    CASE WHEN r.conclusion IS NULL THEN NULL
         WHEN r.conclusion IN ('success', 'neutral') THEN 'success'
         WHEN k = 1 + r.id % 5 THEN r.conclusion
         ELSE 'success' END,
    CASE WHEN r.status <> 'queued' THEN 'runner-' || (r.id * 7 + k) % 64 END,
    4 + (r.id + k) % 12, r.run_attempt,
    r.started_at + (k - 1) * interval '5 seconds',
    r.completed_at,
    r.html_url || '/job/' || (r.run_id * 10 + k),
    r.updated_at, r.updated_at
FROM runs AS r, generate_series(1, 1 + r.id % 5) AS k
"""

LOG_LINES_SQL = """
INSERT INTO log_lines (run_pk, level, message, logged_at)
SELECT r.id,
    CASE WHEN k = 1 + (r.id * 7) % 19 AND r.display_status = 'failed' THEN 'error'
         WHEN k = 1 + (r.id * 7) % 19 AND r.display_status = 'success' THEN 'success'
         WHEN (r.id + k) % 17 = 0 THEN 'warning'
         ELSE 'info' END,
    (ARRAY['Run actions/checkout@v4 (fetch-depth: 1)',
           'Restoring cache key Linux-uv-3f0c1e9a (hit)',
           'uv sync --frozen: 143 packages installed in 2.81s',
           'pytest -q: 1,204 passed, 3 skipped in 96.4s',
           'ruff check .: All checks passed!',
           'docker build --tag ghcr.io/acme/service:sha-' || left(r.head_sha, 7),
           'Uploading artifact test-report.xml (214 kB)',
           'Post job cleanup: removing credentials and temporary files'])[1 + (r.id + k) % 8],
    coalesce(r.started_at, r.created_at) + k * interval '7 seconds'
FROM runs AS r, generate_series(1, 1 + (r.id * 7) % 19) AS k
"""

CHANGES_SQL = f"""
INSERT INTO changes (id, repository, sha, ref, authored_at, committed_at, pushed_at)
SELECT g, {REPOSITORY_EXPR.format(k="r")}, md5('commit' || g) || left(md5('c' || g), 8),
    'refs/heads/main',
    pushed - lag - interval '7 minutes', pushed - lag, pushed
FROM (
    SELECT g, {SKEWED_REPO} AS r,
        now() - interval '{DAYS} days' + (g::float8 / $1::int) * interval '{DAYS} days' AS pushed,
        random() ^ 2 * interval '2 days' AS lag
    FROM generate_series(1, $1::int) AS g
) AS commit
"""

# Deployment g ships commit 3g: its repository and sha; deployed 10 min to 6 h after the push.
DEPLOYMENTS_SQL = f"""
INSERT INTO deployments (id, repository, deployment_id, environment, production, sha, ref,
    creator, status, status_updated_at, deployed_at, succeeded_at, failed_at, source,
    created_at, updated_at)
SELECT g, repository, 50000000 + g, environment, environment = 'production', sha,
    'refs/heads/main', 'deploy-bot',
    CASE WHEN u_state < 0.82 THEN 'success' WHEN u_state < 0.85 THEN 'inactive'
         WHEN u_state < 0.95 THEN 'failure' WHEN u_state < 0.97 THEN 'error'
         ELSE 'in_progress' END,
    finished, deployed,
    CASE WHEN u_state < 0.85 THEN finished END,
    CASE WHEN u_state >= 0.85 AND u_state < 0.97 THEN finished END,
    'github', deployed, finished
FROM (
    SELECT g, c.repository, c.sha, u_state,
        CASE WHEN u_env < 0.5 THEN 'production' WHEN u_env < 0.9 THEN 'staging'
             ELSE 'preview' END AS environment,
        least(c.pushed_at + (600 + 21000 * u_delay) * interval '1 second',
              now() - interval '15 minutes') AS deployed,
        least(c.pushed_at + (600 + 21000 * u_delay) * interval '1 second',
              now() - interval '15 minutes') + (120 + 480 * u_state) * interval '1 second'
            AS finished
    FROM (
        SELECT g, random() AS u_env, random() AS u_state, random() AS u_delay
        FROM generate_series(1, $1::int) AS g
    ) AS draws
    JOIN changes AS c ON c.id = {COMMITS_PER_DEPLOYMENT} * g
) AS deployment
"""

DEPLOYMENT_STATUSES_SQL = """
INSERT INTO deployment_statuses (deployment_pk, status_id, state, occurred_at)
SELECT id, id * 10 + 1, 'in_progress', deployed_at FROM deployments
UNION ALL
SELECT id, id * 10 + 2, CASE WHEN succeeded_at IS NOT NULL THEN 'success' ELSE status END,
    status_updated_at
FROM deployments WHERE status <> 'in_progress'
"""

INCIDENTS_SQL = f"""
INSERT INTO incidents (repository, issue_number, title, opened_at, resolved_at, source,
    created_at, updated_at)
SELECT {REPOSITORY_EXPR.format(k="r")}, 1000 + g,
    (ARRAY['Checkout returns 502 for a share of requests', 'Elevated error rate after deploy',
           'Queue consumers stuck', 'Latency regression on search'])[1 + g % 4],
    opened,
    CASE WHEN u_resolved < 0.9
         THEN least(opened + (900 + 170000 * u_duration ^ 2) * interval '1 second',
                    now() - interval '1 minute') END,
    'github', opened, opened
FROM (
    SELECT g, floor({REPOSITORIES} * random() ^ 2)::int AS r, random() AS u_resolved,
        random() AS u_duration,
        now() - random() * interval '{DAYS} days' AS opened
    FROM generate_series(1, $1::int) AS g
) AS incident
"""

# Same rule as flightdeck_pipeline.metrics.dora.attribute_incident (production = the flag
# or an environment named production/prod, the service's default setting).
ATTRIBUTE_INCIDENTS_SQL = """
UPDATE incidents AS i SET deployment_pk = (
    SELECT d.id FROM deployments AS d
    WHERE d.repository = i.repository AND d.succeeded_at IS NOT NULL
      AND d.succeeded_at <= i.opened_at
      AND (d.production OR lower(d.environment) IN ('production', 'prod'))
    ORDER BY d.succeeded_at DESC, d.id DESC LIMIT 1)
"""

SECONDARY_INDEXES_SQL = """
SELECT i.indexname, i.indexdef FROM pg_indexes AS i
WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[])
  AND NOT EXISTS (
      SELECT 1 FROM pg_constraint AS c
      WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass)
ORDER BY i.indexname
"""

COUNTED_TABLES = (
    "runs",
    "jobs",
    "log_lines",
    "changes",
    "deployments",
    "deployment_statuses",
    "incidents",
)


async def seed(dsn: str, plan: SeedPlan) -> SeedReport:
    """Fill the (migrated, empty) pipeline database at ``dsn`` (a superuser connection)."""
    report = SeedReport(plan)
    connection = await asyncpg.connect(dsn)
    try:
        existing = await connection.fetchval("SELECT count(*) FROM runs")
        if existing:
            raise RuntimeError(f"the runs table already holds {existing} rows; seed a fresh one")
        await connection.execute("SET session_replication_role = replica")
        await connection.execute("SET synchronous_commit = off")
        await connection.execute("SET maintenance_work_mem = '512MB'")
        await connection.execute("SET work_mem = '256MB'")
        await connection.execute(f"SELECT setseed({RANDOM_SEED})")

        async def step(name: str, sql: str, *args: object) -> None:
            started = time.perf_counter()
            await connection.execute(sql, *args)
            report.seconds[name] = report.seconds.get(name, 0.0) + time.perf_counter() - started

        indexes = await connection.fetch(SECONDARY_INDEXES_SQL, list(BIG_TABLES))
        for index in indexes:
            await step("drop indexes", f'DROP INDEX "{index["indexname"]}"')
        await step("runs", RUNS_SQL, plan.runs)
        await step("jobs", JOBS_SQL)
        await step("log_lines", LOG_LINES_SQL)
        await step("changes", CHANGES_SQL, plan.commits)
        await step("deployments", DEPLOYMENTS_SQL, plan.deployments)
        await step("deployments", DEPLOYMENT_STATUSES_SQL)
        await step("incidents", INCIDENTS_SQL, plan.incidents)
        await step("incidents", ATTRIBUTE_INCIDENTS_SQL)
        for index in indexes:
            await step("rebuild indexes", index["indexdef"])
        for table in COUNTED_TABLES:
            await step(
                "sequences",
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)",
            )
        started = time.perf_counter()
        await rebuild(dsn)
        report.seconds["rollups"] = time.perf_counter() - started
        await step("vacuum analyze", "VACUUM ANALYZE")
        for table in (*COUNTED_TABLES, *ROLLUP_TABLES):
            report.rows[table] = int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await connection.close()
    return report


async def rebuild(dsn: str) -> None:
    """The service's rollup recomputation (``flightdeck-pipeline rebuild-rollups``)."""
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with async_sessionmaker(engine).begin() as session:
            await rebuild_rollups(session)
    finally:
        await engine.dispose()
