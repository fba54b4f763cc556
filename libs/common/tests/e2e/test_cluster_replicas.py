"""Multi-replica mode (issue 8, ``make run-cluster``): two processes of every service behind
Traefik, sharing one PostgreSQL and one Redis. Where it matters the tests talk to each
replica on its own port, so what they show is shared state, not the load balancer's luck:
a rate limit spent on one replica is spent on the other, a token revoked on one is refused
by the others, an SSE client on one pipeline replica sees a webhook taken by the other, two
admin replicas keep one valid audit chain, two relays per outbox deliver exactly once, and
two mapping workers share one queue of accepted webhook deliveries, mapping each once.

Replicas honour ``X-Forwarded-For`` from loopback (as behind the ingress), so each test
poses as its own client address and per-IP limits do not leak between tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.testing.live import SseReader
from flightdeck_common.testing.plugin import isolated_full_stack
from flightdeck_common.testing.stack_users import (
    audit_events,
    create_user,
    registration_request,
    service_token,
    wait_for_run_ids,
)

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[4]
WORKFLOW_RUN = REPO_ROOT / "services/pipeline/tests/fixtures/github/workflow_run"
REGISTRATION_LIMIT = 3
SETTLE_SECONDS = 2.0  # relays poll every second: a second delivery would land by then
DELIVERY_TIMEOUT = 30.0

T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Stack]:
    """Two replicas of each service in full mode, with their own PostgreSQL and Redis."""
    with isolated_full_stack(
        "flightdeck-cluster",
        {"FLIGHTDECK_ADMIN_RATE_LIMIT_REGISTRATION": f"{REGISTRATION_LIMIT}/hour"},
        replicas=2,
        health_check_interval="1s",
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def ingress(cluster: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.ingress_url, timeout=15, trust_env=False) as client:
        yield client


def _replica(stack: Stack, service: str, index: int) -> httpx.Client:
    return httpx.Client(base_url=stack.replica_url(service, index), timeout=15, trust_env=False)


def _user(stack: Stack, http: httpx.Client, role: str) -> tuple[str, str]:
    return create_user(stack, http, role, prefix="cluster")


def _login(http: httpx.Client, username: str, password: str, **headers: str) -> dict[str, Any]:
    response = http.post(
        "/auth/login", json={"username": username, "password": password}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def admin_headers(cluster: Stack, ingress: httpx.Client) -> dict[str, str]:
    username, password = _user(cluster, ingress, "admin")
    return _bearer(_login(ingress, username, password)["access_token"])


def _client_ip() -> dict[str, str]:
    """A client address of this test's own (TEST-NET-3), honoured from loopback."""
    return {"X-Forwarded-For": f"203.0.113.{secrets.randbelow(250) + 1}"}


def _eventually(probe: Callable[[], T | None], what: str, timeout: float = DELIVERY_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def _admin_db_rows(stack: Stack, query: str) -> list[tuple[Any, ...]]:
    assert stack.postgres is not None
    url = stack.postgres.url("flightdeck_admin")

    async def read() -> list[tuple[Any, ...]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return [tuple(row) for row in await connection.execute(text(query))]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _mapped(stack: Stack, index: int) -> float:
    """Run deliveries pipeline replica ``index``'s worker mapped (its own count)."""
    metrics = httpx.get(f"{stack.replica_url('pipeline', index)}/metrics", timeout=5).text
    prefix = 'flightdeck_webhook_mapped_total{event="workflow_run",result="processed"}'
    values = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


def _delivered(stack: Stack, service: str, index: int) -> float:
    """``flightdeck_outbox_delivered_total`` of one replica (its relay's own count)."""
    metrics = httpx.get(f"{stack.replica_url(service, index)}/metrics", timeout=5).text
    prefix = f'flightdeck_outbox_delivered_total{{service="{service}"}}'
    values = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


# -- 1. rate limits ---------------------------------------------------------------------


def test_a_rate_limit_spent_on_one_replica_is_spent_on_the_other(cluster: Stack) -> None:
    client = _client_ip()

    def register(http: httpx.Client, headers: dict[str, str]) -> httpx.Response:
        return http.post(
            "/admin/registration-requests",
            json=registration_request("cluster test"),
            headers=headers,
        )

    with _replica(cluster, "admin", 0) as first, _replica(cluster, "admin", 1) as second:
        for attempt in range(REGISTRATION_LIMIT):
            filed = register(first, client)
            assert filed.status_code == 202, f"attempt {attempt}: {filed.text}"
        refused = register(second, client)  # its own first request from this client
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert register(first, client).status_code == 429
        # The budget is this client's, not the replica's: another address still gets in.
        assert register(second, _client_ip()).status_code == 202


# -- 2. revocation ----------------------------------------------------------------------


def test_a_token_revoked_on_one_replica_is_refused_by_the_others(
    cluster: Stack, ingress: httpx.Client
) -> None:
    username, password = _user(cluster, ingress, "viewer")
    client = _client_ip()
    with (
        _replica(cluster, "auth", 0) as auth_a,
        _replica(cluster, "auth", 1) as auth_b,
        _replica(cluster, "pipeline", 1) as pipeline_b,
    ):
        tokens = _login(auth_a, username, password, **client)
        access = _bearer(tokens["access_token"])
        assert auth_b.get("/auth/me", headers=access).status_code == 200
        assert pipeline_b.get("/pipelines", headers=access).status_code == 200

        logout = auth_a.post(
            "/auth/logout",
            json={"refresh_token": tokens["refresh_token"]},
            headers={**access, **client},
        )
        assert logout.status_code == 204, logout.text
        revoked_at = time.monotonic()

        # Redis carries the denylist: no polling interval to wait for.
        def refused_everywhere() -> bool | None:
            answers = [
                pipeline_b.get("/pipelines", headers=access).status_code,
                auth_b.get("/auth/me", headers=access).status_code,
            ]
            return True if answers == [401, 401] else None

        _eventually(refused_everywhere, "the revoked token to be refused", timeout=2.0)
        assert time.monotonic() - revoked_at < 2.0
        refresh = auth_b.post(
            "/auth/token/refresh", json={"refresh_token": tokens["refresh_token"]}, headers=client
        )
        assert refresh.status_code == 401, refresh.text


# -- 3. live events ---------------------------------------------------------------------


def _signed_delivery(secret: str, event: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }


async def test_sse_on_one_replica_sees_a_webhook_taken_by_the_other(
    cluster: Stack, ingress: httpx.Client
) -> None:
    username, password = await asyncio.to_thread(_user, cluster, ingress, "viewer")
    token = (await asyncio.to_thread(_login, ingress, username, password))["access_token"]
    secret = cluster.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"]
    payload = json.loads((WORKFLOW_RUN / "requested.payload.json").read_bytes())
    run_id = 700_000_000 + secrets.randbelow(100_000_000)
    payload["workflow_run"]["id"] = run_id
    body = json.dumps(payload).encode()

    async with (
        httpx.AsyncClient(
            base_url=cluster.replica_url("pipeline", 0), timeout=20, trust_env=False
        ) as replica_a,
        httpx.AsyncClient(
            base_url=cluster.replica_url("pipeline", 1), timeout=20, trust_env=False
        ) as replica_b,
        replica_a.stream(
            "GET", "/pipelines/events", headers={**_bearer(token), "Accept": "text/event-stream"}
        ) as stream,
    ):
        assert stream.status_code == 200
        reader = SseReader(stream)
        opening = await reader.next_message()  # retry + starting id: the client is live
        assert opening is not None
        assert opening.retry is not None

        delivered = await replica_b.post(
            "/pipelines/webhooks/github",
            content=body,
            headers=_signed_delivery(secret, "workflow_run", body),
        )
        assert delivered.status_code == 202, delivered.text
        assert delivered.json()["result"] == "accepted", delivered.text

        # Mapped behind the answer (by either replica's worker), then published.
        deadline = time.monotonic() + 10
        while True:
            event = await reader.next_event(within=max(deadline - time.monotonic(), 0.1))
            assert event.data is not None
            if event.event == "run.updated" and json.loads(event.data)["run_id"] == run_id:
                break


# -- 4. audit chain ---------------------------------------------------------------------


def _audit_event(batch: int, index: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "test.cluster_append",
        "service": "pipeline",
        "actor": f"writer-{batch % 2}",
        "subject": f"batch-{batch}",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"batch": batch, "index": index},
    }


def test_two_admin_replicas_keep_one_valid_audit_chain(
    cluster: Stack, ingress: httpx.Client, admin_headers: dict[str, str]
) -> None:
    token = service_token(cluster, ingress, "pipeline")
    batches = [[_audit_event(b, i) for i in range(10)] for b in range(16)]
    urls = [cluster.replica_url("admin", index) for index in range(2)]

    async def append_everywhere() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30, trust_env=False, headers=_bearer(token)) as http:

            async def post(url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
                response = await http.post(
                    f"{url}/admin/internal/audit-events", json={"events": events}
                )
                assert response.status_code == 200, response.text
                answer: dict[str, Any] = response.json()
                return answer

            # Each batch to one replica and, at the same time, again to the other.
            calls = [post(urls[b % 2], events) for b, events in enumerate(batches)]
            calls += [post(urls[(b + 1) % 2], events) for b, events in enumerate(batches)]
            return list(await asyncio.gather(*calls))

    # Meanwhile the relays keep bringing real events (logins) through the ingress.
    username, password = _user(cluster, ingress, "viewer")
    for _ in range(4):
        _login(ingress, username, password)
    answers = asyncio.run(append_everywhere())
    total = sum(len(events) for events in batches)
    assert sum(answer["accepted"] for answer in answers) == total
    assert sum(answer["duplicates"] for answer in answers) == total

    for url in urls:  # each replica checks the whole chain itself
        verdict = httpx.get(
            f"{url}/admin/audit-events/verify", headers=admin_headers, timeout=30, trust_env=False
        )
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["valid"] is True, verdict.json()
    rows = _admin_db_rows(cluster, "SELECT seq, event_id FROM audit_events ORDER BY seq")
    seqs = [seq for seq, _ in rows]
    assert seqs == list(range(1, len(rows) + 1)), "the chain has a gap or a repeated position"
    assert len({event_id for _, event_id in rows}) == len(rows), "an event id is stored twice"
    ours = {event["id"] for events in batches for event in events}
    assert ours <= {str(event_id) for _, event_id in rows}


# -- 5. outbox relays -------------------------------------------------------------------


def test_two_relays_per_outbox_deliver_each_event_exactly_once(
    cluster: Stack, ingress: httpx.Client, admin_headers: dict[str, str]
) -> None:
    run = secrets.token_hex(3)
    ghosts = [f"ghost-{run}-{index:02d}" for index in range(16)]
    delivered_before = [_delivered(cluster, "auth", index) for index in range(2)]
    with _replica(cluster, "auth", 0) as auth_a, _replica(cluster, "auth", 1) as auth_b:
        for index, ghost in enumerate(ghosts):  # alternate replicas; one address per attempt
            failed = (auth_a, auth_b)[index % 2].post(
                "/auth/login",
                json={"username": ghost, "password": "not-the-password"},
                headers={"X-Forwarded-For": f"198.51.100.{index + 1}"},
            )
            assert failed.status_code == 401, failed.text

    def mine() -> list[dict[str, Any]]:
        return [
            event
            for event in audit_events(ingress, admin_headers, type="auth.login.failed")
            if event["actor"] in ghosts
        ]

    _eventually(
        lambda: True if {event["actor"] for event in mine()} == set(ghosts) else None,
        "every failed login in the audit log",
    )
    time.sleep(SETTLE_SECONDS)
    arrived = mine()
    assert sorted(event["actor"] for event in arrived) == sorted(ghosts), "delivered twice"
    assert len({event["id"] for event in arrived}) == len(ghosts)
    relayed = [
        _delivered(cluster, "auth", index) - delivered_before[index] for index in range(2)
    ]  # which relay took which rows is up to timing; together they took all of them
    assert sum(relayed) >= len(ghosts), relayed
    verdict = ingress.get("/admin/audit-events/verify", headers=admin_headers)
    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["valid"] is True, verdict.json()


# -- 6. the delivery queue --------------------------------------------------------------


def test_two_mapping_workers_share_the_queue_and_map_each_delivery_once(
    cluster: Stack, ingress: httpx.Client, admin_headers: dict[str, str]
) -> None:
    """Deliveries accepted by both pipeline replicas at once: both workers claim from the
    one queue of pending deliveries (``FOR UPDATE SKIP LOCKED``); each delivery becomes its
    run, and the two workers together mapped it once."""
    secret = cluster.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"]
    payload = json.loads((WORKFLOW_RUN / "requested.payload.json").read_bytes())
    repository = f"acme/cluster-queue-{secrets.token_hex(4)}"
    payload["repository"]["full_name"] = repository
    base = 600_000_000 + secrets.randbelow(100_000_000)
    run_ids = [base + index for index in range(60)]
    mapped_before = [_mapped(cluster, index) for index in range(2)]

    async def deliver_to_both() -> list[httpx.Response]:
        async with (
            httpx.AsyncClient(
                base_url=cluster.replica_url("pipeline", 0), timeout=20, trust_env=False
            ) as replica_a,
            httpx.AsyncClient(
                base_url=cluster.replica_url("pipeline", 1), timeout=20, trust_env=False
            ) as replica_b,
        ):

            async def deliver(http: httpx.AsyncClient, run_id: int) -> httpx.Response:
                body = json.dumps(
                    {**payload, "workflow_run": {**payload["workflow_run"], "id": run_id}}
                ).encode()
                return await http.post(
                    "/pipelines/webhooks/github",
                    content=body,
                    headers=_signed_delivery(secret, "workflow_run", body),
                )

            replicas = (replica_a, replica_b)
            return list(
                await asyncio.gather(
                    *(deliver(replicas[n % 2], run_id) for n, run_id in enumerate(run_ids))
                )
            )

    answers = asyncio.run(deliver_to_both())
    outcomes = Counter((answer.status_code, answer.json().get("result")) for answer in answers)
    assert outcomes == {(202, "accepted"): len(run_ids)}, outcomes
    stored = wait_for_run_ids(ingress, admin_headers, repository, run_ids, DELIVERY_TIMEOUT)
    assert stored == set(run_ids)
    time.sleep(SETTLE_SECONDS)  # a second mapping of one, if there were one, would be counted
    by_replica = [_mapped(cluster, index) - mapped_before[index] for index in range(2)]
    # Which worker took which deliveries is up to timing; together they mapped each once.
    assert sum(by_replica) == len(run_ids), f"{by_replica} mappings of {len(run_ids)} deliveries"
