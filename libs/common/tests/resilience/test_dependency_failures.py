"""Issue 9, dependency failures: real PostgreSQL, Redis and auth processes are stopped under
a running full-mode stack (one replica per service, Traefik in front) and started again.
Each scenario asserts what users see during the outage and that everything recovers by
itself, without restarting a service, within a stated time.

Recovery times are measured and reported as test properties (``-rA`` or the JUnit XML
show them); the only timing asserted is a generous bound proving "no hang".
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from redis import Redis

from flightdeck_common.devstack.stack import SERVICES, Stack
from flightdeck_common.testing.live import SseReader
from flightdeck_common.testing.plugin import isolated_full_stack
from flightdeck_common.testing.stack_users import (
    create_user,
    registration_request,
    wait_for_run_ids,
)

pytestmark = [pytest.mark.e2e, pytest.mark.resilience]

REPO_ROOT = Path(__file__).resolve().parents[4]
WORKFLOW_RUN = REPO_ROOT / "services/pipeline/tests/fixtures/github/workflow_run"
PROBLEM_JSON = "application/problem+json"
REQUEST_TIMEOUT = 15.0  # the clients' timeout: an answer must come well before it
NO_HANG_SECONDS = 10.0  # an outage answer within this proves "no hang"
RECOVERY_TIMEOUT = 20.0  # everything works again within this after the dependency returns
# The mapping worker retries a failed batch with backoff (at most 30 s, MAX_BACKOFF_SECONDS
# in webhooks/worker.py) and has failed all through the outage: a delivery accepted after
# PostgreSQL is back is mapped once its current wait ends (a new delivery does not cut it
# short), so within that cap plus a margin.
MAPPING_RESUMES = 45.0
HEALTH_CHECK_INTERVAL = "1s"  # Traefik's /readyz probe (5 s by default in `make run`)
REGISTRATION_LIMIT = 3
FAILURES_PER_USER = 3

T = TypeVar("T")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """All services in full mode with PostgreSQL and Redis of their own: this module stops
    and starts them, which must not disturb other tests."""
    with isolated_full_stack(
        "flightdeck-resilience",
        {
            "FLIGHTDECK_ADMIN_RATE_LIMIT_REGISTRATION": f"{REGISTRATION_LIMIT}/hour",
            "FLIGHTDECK_AUTH_LOGIN_MAX_FAILURES_PER_USER": str(FAILURES_PER_USER),
            # Every login of this module comes from 127.0.0.1 through the ingress.
            "FLIGHTDECK_AUTH_LOGIN_MAX_FAILURES_PER_IP": "1000",
        },
        health_check_interval=HEALTH_CHECK_INTERVAL,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def ingress(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.ingress_url, timeout=REQUEST_TIMEOUT, trust_env=False) as http:
        yield http


# -- helpers ----------------------------------------------------------------------------


def _user(stack: Stack, http: httpx.Client, role: str) -> tuple[str, str]:
    return create_user(stack, http, role, prefix="resilience")


def _login(http: httpx.Client, username: str, password: str) -> dict[str, Any]:
    response = http.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _session(stack: Stack, http: httpx.Client, role: str) -> tuple[dict[str, str], str, str]:
    """(Authorization header, username, password) of a fresh user of ``role``."""
    username, password = _user(stack, http, role)
    return _bearer(_login(http, username, password)["access_token"]), username, password


def _run(run_id: int, status: str = "queued") -> dict[str, Any]:
    return {"repository": "acme/resilience", "run_id": run_id, "status": status}


def _run_id() -> int:
    return 800_000_000 + secrets.randbelow(100_000_000)


def _delivery(
    stack: Stack, run_id: int, delivery_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A signed ``workflow_run`` delivery for ``run_id``: (body, headers)."""
    payload = json.loads((WORKFLOW_RUN / "requested.payload.json").read_bytes())
    payload["workflow_run"]["id"] = run_id
    body = json.dumps(payload).encode()
    secret = stack.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"]
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "X-GitHub-Event": "workflow_run",
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def _timed(call: Callable[[], httpx.Response]) -> httpx.Response:
    """``call()``, asserting it answered within ``NO_HANG_SECONDS``."""
    started = time.monotonic()
    response = call()
    elapsed = time.monotonic() - started
    assert elapsed < NO_HANG_SECONDS, f"answered after {elapsed:.1f}s: {response.text}"
    return response


def _assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    if code is not None:
        assert response.json()["code"] == code, response.text


def _eventually(probe: Callable[[], T | None], what: str, timeout: float) -> tuple[T, float]:
    """Poll ``probe`` until it returns non-None; return (value, seconds it took)."""
    started = time.monotonic()
    while True:
        found = probe()
        if found is not None:
            return found, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def _report(record_property: Callable[[str, object], None], name: str, seconds: float) -> None:
    """Record a measured time as a test property and print it (shown with ``-rP``)."""
    record_property(name, round(seconds, 2))
    print(f"{name}: {seconds:.2f}")


def _readyz(stack: Stack, service: str) -> httpx.Response:
    return httpx.get(f"{stack.service_url(service)}/readyz", timeout=REQUEST_TIMEOUT)


def _log_count(stack: Stack, service: str, text: str) -> int:
    return stack.log_path(service).read_text(errors="replace").count(text)


def _redis_keys(stack: Stack, pattern: str) -> list[bytes]:
    assert stack.redis is not None
    with Redis.from_url(stack.redis.url, socket_timeout=2) as client:
        return list(client.scan_iter(match=pattern))


# -- 1. PostgreSQL ----------------------------------------------------------------------


def test_postgres_outage_answers_503_and_recovers_without_restarts(
    stack: Stack, ingress: httpx.Client, record_property: Callable[[str, object], None]
) -> None:
    assert stack.postgres is not None
    operator, operator_name, operator_password = _session(stack, ingress, "operator")
    admin, _, _ = _session(stack, ingress, "admin")
    assert ingress.post("/pipelines", json=_run(_run_id()), headers=operator).status_code == 201
    direct = {service: stack.service_url(service) for service in SERVICES}

    stack.postgres.stop()
    try:
        for service in SERVICES:
            ready = _timed(functools.partial(_readyz, stack, service))
            _assert_problem(ready, 503, "not_ready")
            assert "database" in ready.json()["detail"]
            assert ready.json()["checks"]["database"]["status"] == "down"
            assert httpx.get(f"{direct[service]}/healthz").status_code == 200  # still alive

        # Each service itself answers a 503 problem, fast. (Directly: the ingress stops
        # routing to them once its health check sees /readyz fail, see below.)
        with httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False) as http:
            login = _timed(
                lambda: http.post(
                    f"{direct['auth']}/auth/login",
                    json={"username": operator_name, "password": operator_password},
                )
            )
            _assert_problem(login, 503, "database_unavailable")
            assert login.headers["retry-after"] == "5"
            read = _timed(lambda: http.get(f"{direct['pipeline']}/pipelines", headers=operator))
            _assert_problem(read, 503, "database_unavailable")
            write = _timed(
                lambda: http.post(
                    f"{direct['pipeline']}/pipelines", json=_run(_run_id()), headers=operator
                )
            )
            _assert_problem(write, 503, "database_unavailable")
            audit = _timed(lambda: http.get(f"{direct['admin']}/admin/audit-events", headers=admin))
            _assert_problem(audit, 503, "database_unavailable")
            failed_run = _run_id()
            body, headers = _delivery(stack, failed_run)
            hook = _timed(
                lambda: http.post(
                    f"{direct['pipeline']}/pipelines/webhooks/github", content=body, headers=headers
                )
            )
            _assert_problem(hook, 503, "database_unavailable")

        # Through the ingress: once Traefik's health check has seen /readyz fail it has no
        # server left and answers 503 itself, in plain text.
        def ingress_refuses() -> httpx.Response | None:
            response = ingress.get("/pipelines", headers=operator)
            assert response.status_code == 503, response.text
            return None if response.headers["content-type"] == PROBLEM_JSON else response

        refused, _ = _eventually(ingress_refuses, "Traefik to take pipeline out", timeout=10)
        assert refused.headers["content-type"].startswith("text/plain")
        assert refused.text.strip() == "no available server"
        hook = _timed(
            lambda: ingress.post("/pipelines/webhooks/github", content=body, headers=headers)
        )
        assert hook.status_code == 503  # GitHub records a failed delivery
    finally:
        stack.postgres.start()
        restarted_at = time.monotonic()  # from the moment it answers again

    def write_succeeds() -> httpx.Response | None:
        response = ingress.post("/pipelines", json=_run(_run_id()), headers=operator)
        assert response.status_code in (201, 503), response.text
        return response if response.status_code == 201 else None

    _eventually(write_succeeds, "a write through the ingress", timeout=RECOVERY_TIMEOUT)
    recovery = time.monotonic() - restarted_at
    _report(record_property, "postgres_recovery_seconds", recovery)
    for service in SERVICES:
        assert _readyz(stack, service).status_code == 200
    # GitHub's redelivery (same delivery id) of the refused webhook is taken now, and
    # mapped behind its answer.
    redelivered = ingress.post("/pipelines/webhooks/github", content=body, headers=headers)
    assert redelivered.status_code == 202, redelivered.text
    assert redelivered.json()["result"] == "accepted", redelivered.text
    accepted_at = time.monotonic()
    wait_for_run_ids(
        ingress, operator, "octo-org/octo-repo", {failed_run}, within_seconds=MAPPING_RESUMES
    )
    _report(record_property, "webhook_mapped_after_seconds", time.monotonic() - accepted_at)
    assert _login(ingress, operator_name, operator_password)["access_token"]
    assert ingress.get("/admin/audit-events", headers=admin).status_code == 200
    assert recovery < RECOVERY_TIMEOUT


# -- 2. Redis ---------------------------------------------------------------------------


async def _next_run_event(reader: SseReader, run_id: int, within: float = 10.0) -> int:
    """Read the stream until an event about ``run_id``; return its event id."""
    deadline = time.monotonic() + within
    while True:
        event = await reader.next_event(within=max(deadline - time.monotonic(), 0.1))
        assert event.data is not None
        if event.event == "run.updated" and json.loads(event.data)["run_id"] == run_id:
            assert event.id is not None
            return int(event.id)


async def test_redis_outage_degrades_without_failing_and_recovers(
    stack: Stack, ingress: httpx.Client, record_property: Callable[[str, object], None]
) -> None:
    assert stack.redis is not None
    operator, _, _ = await asyncio.to_thread(_session, stack, ingress, "operator")
    viewer, viewer_name, viewer_password = await asyncio.to_thread(
        _session, stack, ingress, "viewer"
    )
    admin, _, _ = await asyncio.to_thread(_session, stack, ingress, "admin")
    target_name, _ = await asyncio.to_thread(_user, stack, ingress, "viewer")
    registration_log = "rate limit storage unavailable"

    async with httpx.AsyncClient(
        base_url=stack.ingress_url, timeout=REQUEST_TIMEOUT, trust_env=False
    ) as http:
        stack.redis.stop()
        try:
            # Readiness: degraded, not down (Traefik keeps routing).
            for service in SERVICES:
                ready = await asyncio.to_thread(_readyz, stack, service)
                assert ready.status_code == 200, ready.text
                assert ready.json()["status"] == "degraded"
                assert ready.json()["checks"]["redis"] == {
                    **ready.json()["checks"]["redis"],
                    "status": "down",
                    "critical": False,
                }

            # Reads and writes of every service keep working; the metrics cache is bypassed.
            login = await http.post(
                "/auth/login", json={"username": viewer_name, "password": viewer_password}
            )
            assert login.status_code == 200, login.text
            assert (await http.get("/auth/me", headers=viewer)).status_code == 200
            logout = await http.post(
                "/auth/logout",
                json={"refresh_token": login.json()["refresh_token"]},
                headers=_bearer(login.json()["access_token"]),
            )
            # A revocation must reach Redis (pipeline and admin read it there): logging out
            # fails visibly, and nothing is half done (the session stays valid, retry later).
            _assert_problem(logout, 503, "dependency_unavailable")
            changed = await http.post(
                "/auth/me/password",
                json={"current_password": viewer_password, "new_password": "x" + viewer_password},
                headers=_bearer(login.json()["access_token"]),
            )
            _assert_problem(changed, 503, "dependency_unavailable")
            deactivate = await http.patch(
                f"/admin/users/{login.json()['user']['id']}",
                json={"is_active": False},
                headers=admin,
            )
            _assert_problem(deactivate, 503, "auth_unavailable")  # also a revocation
            assert (await http.get("/pipelines", headers=viewer)).status_code == 200
            assert (await http.get("/pipelines/stats", headers=viewer)).status_code == 200
            assert (await http.get("/admin/audit-events", headers=admin)).status_code == 200
            first_run = _run_id()
            created = await http.post("/pipelines", json=_run(first_run), headers=operator)
            assert created.status_code == 201, created.text

            # SSE: a client connected during the outage sees run changes.
            async with http.stream(
                "GET", "/pipelines/events", headers={**viewer, "Accept": "text/event-stream"}
            ) as stream:
                assert stream.status_code == 200
                reader = SseReader(stream)
                opening = await reader.next_message()
                assert opening is not None
                assert opening.retry is not None
                live_run = _run_id()
                body, headers = _delivery(stack, live_run)
                hook = await http.post("/pipelines/webhooks/github", content=body, headers=headers)
                assert hook.status_code == 202, hook.text
                assert hook.json()["result"] == "accepted", hook.text
                last_seen = await _next_run_event(reader, live_run)  # once it is mapped
            # ... and one that was away while a change happened catches up after Redis is back.
            missed_run = _run_id()
            missed = await http.post("/pipelines", json=_run(missed_run), headers=operator)
            assert missed.status_code == 201, missed.text

            # Rate limits fall back to per-process counters: still limited, logged once.
            # Directly at admin, posing as one client (per-IP limit; loopback is trusted).
            client = {"X-Forwarded-For": f"203.0.113.{secrets.randbelow(250) + 1}"}
            async with httpx.AsyncClient(
                base_url=stack.service_url("admin"), timeout=REQUEST_TIMEOUT, trust_env=False
            ) as admin_direct:
                answers = [
                    (
                        await admin_direct.post(
                            "/admin/registration-requests",
                            json=registration_request("resilience test"),
                            headers=client,
                        )
                    ).status_code
                    for _ in range(REGISTRATION_LIMIT + 2)
                ]
            assert answers == [202] * REGISTRATION_LIMIT + [429, 429]
            assert _log_count(stack, "admin", registration_log) == 1

            # Failed logins are still counted (in memory): the account locks.
            for _ in range(FAILURES_PER_USER):
                wrong = await http.post(
                    "/auth/login", json={"username": target_name, "password": "wrong-password"}
                )
                assert wrong.status_code in (401, 423), wrong.text
            locked = await http.post(
                "/auth/login", json={"username": target_name, "password": "wrong-password"}
            )
            _assert_problem(locked, 423, "account_locked")
            assert _log_count(stack, "auth", "login throttle storage unavailable") == 1
        finally:
            stack.redis.start()
            restarted_at = time.monotonic()  # from the moment it answers again

        def ready_again() -> bool | None:
            states = [_readyz(stack, service).json().get("status") for service in SERVICES]
            return True if states == ["ready"] * len(SERVICES) else None

        _, _ = await asyncio.to_thread(
            _eventually, ready_again, "every service ready", RECOVERY_TIMEOUT
        )
        _report(record_property, "redis_recovery_seconds", time.monotonic() - restarted_at)

        # Resuming with Last-Event-ID replays what was missed, then follows live changes.
        async with http.stream(
            "GET",
            "/pipelines/events",
            headers={**viewer, "Accept": "text/event-stream", "Last-Event-ID": str(last_seen)},
        ) as stream:
            assert stream.status_code == 200
            reader = SseReader(stream)
            await _next_run_event(reader, missed_run)
            after_run = _run_id()
            created = await http.post("/pipelines", json=_run(after_run), headers=operator)
            assert created.status_code == 201, created.text
            await _next_run_event(reader, after_run)

        logout = await http.post(
            "/auth/logout",
            json={"refresh_token": login.json()["refresh_token"]},
            headers=_bearer(login.json()["access_token"]),
        )
        assert logout.status_code == 204, logout.text

        # Redis is used again: failure counters and rate-limit windows land in it.
        wrong = await http.post(
            "/auth/login", json={"username": viewer_name, "password": "wrong-password"}
        )
        assert wrong.status_code == 401, wrong.text
        assert await asyncio.to_thread(_redis_keys, stack, "flightdeck:auth:throttle:*")
        assert (
            await http.post(
                "/admin/registration-requests",
                json=registration_request("resilience test"),
            )
        ).status_code == 202
        assert await asyncio.to_thread(_redis_keys, stack, "*registration*")
        # One warning per use and outage: nothing failed again once Redis was back (the
        # clients replace connections that died with the old server instead of failing).
        assert _log_count(stack, "admin", registration_log) == 1
        assert _log_count(stack, "auth", "login throttle storage unavailable") == 1
        assert _log_count(stack, "pipeline", "change bus: cannot publish on Redis") == 1


# -- 3. auth ----------------------------------------------------------------------------


def test_auth_outage_keeps_tokens_working_and_refuses_logins(
    stack: Stack, ingress: httpx.Client, record_property: Callable[[str, object], None]
) -> None:
    operator, operator_name, operator_password = _session(stack, ingress, "operator")
    admin, _, _ = _session(stack, ingress, "admin")
    # Both services have verified a token of auth's current key: its JWKS is cached.
    assert ingress.get("/pipelines", headers=operator).status_code == 200
    assert ingress.get("/admin/audit-events", headers=admin).status_code == 200

    stack.stop_service("auth")
    try:
        # Tokens issued before keep working: verified locally with the cached keys.
        assert _timed(lambda: ingress.get("/pipelines", headers=operator)).status_code == 200
        created = _timed(lambda: ingress.post("/pipelines", json=_run(_run_id()), headers=operator))
        assert created.status_code == 201, created.text
        assert _timed(lambda: ingress.get("/admin/audit-events", headers=admin)).status_code == 200
        # What needs auth itself answers a 503 problem from the service asking it.
        users = _timed(lambda: ingress.get("/admin/users", headers=admin))
        _assert_problem(users, 503, "auth_unavailable")

        # Logins: Traefik answers for auth. Until its health check notices, the connection
        # is refused (502 Bad Gateway); then it has no server left (503).
        seen: set[tuple[int, str]] = set()

        def login_refused() -> httpx.Response | None:
            response = _timed(
                lambda: ingress.post(
                    "/auth/login", json={"username": operator_name, "password": operator_password}
                )
            )
            seen.add((response.status_code, response.text.strip()))
            return response if response.status_code == 503 else None

        refused, _ = _eventually(login_refused, "Traefik to take auth out", timeout=10)
        assert refused.headers["content-type"].startswith("text/plain")
        # Traefik's own bodies: 502 "Bad Gateway" (no content type), 503 in plain text.
        assert seen <= {(502, "Bad Gateway"), (503, "no available server")}, seen
    finally:
        restarted_at = time.monotonic()
        stack.start_service("auth")

    def login_works() -> dict[str, Any] | None:
        response = ingress.post(
            "/auth/login", json={"username": operator_name, "password": operator_password}
        )
        return response.json() if response.status_code == 200 else None

    tokens, _ = _eventually(login_works, "a login through the ingress", RECOVERY_TIMEOUT)
    _report(record_property, "auth_recovery_seconds", time.monotonic() - restarted_at)
    assert ingress.get("/pipelines", headers=_bearer(tokens["access_token"])).status_code == 200
    assert ingress.get("/admin/users", headers=admin).status_code == 200


# -- 4. the ingress ---------------------------------------------------------------------


def test_ingress_outage_refuses_connections_and_services_keep_running(
    stack: Stack, ingress: httpx.Client, record_property: Callable[[str, object], None]
) -> None:
    assert stack.traefik is not None
    operator, _, _ = _session(stack, ingress, "operator")
    stack.traefik.stop()
    try:
        with pytest.raises(httpx.ConnectError):
            ingress.get("/pipelines", headers=operator)
        # Behind it, the services are fine (and still reach each other directly).
        with httpx.Client(base_url=stack.service_url("pipeline"), trust_env=False) as pipeline:
            assert pipeline.get("/pipelines", headers=operator).status_code == 200
        for service in SERVICES:
            assert _readyz(stack, service).json()["status"] == "ready"
    finally:
        restarted_at = time.monotonic()
        stack.traefik.start()

    def routed() -> bool | None:
        try:
            response = ingress.get("/pipelines", headers=operator)
        except httpx.TransportError:
            return None
        return True if response.status_code == 200 else None

    _eventually(routed, "the ingress to route again", RECOVERY_TIMEOUT)
    _report(record_property, "ingress_recovery_seconds", time.monotonic() - restarted_at)
