"""The three services as real processes behind real Traefik, reached only through the ingress."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.testing.stack_users import service_token

pytestmark = pytest.mark.e2e

PREFIXES = {"auth": "/auth", "pipeline": "/pipelines", "admin": "/admin"}
TITLES = {
    "auth": "Flightdeck Auth",
    "pipeline": "Flightdeck Pipelines",
    "admin": "Flightdeck Admin",
}


@pytest.fixture(scope="module")
def ingress(flightdeck_stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=flightdeck_stack.ingress_url, timeout=10, trust_env=False) as c:
        yield c


def test_ingress_answers_its_own_ping(ingress: httpx.Client) -> None:
    response = ingress.get("/ping")
    assert response.status_code == 200


@pytest.mark.parametrize("service", PREFIXES)
def test_docs_and_schema_are_served_through_the_ingress(
    ingress: httpx.Client, service: str
) -> None:
    prefix = PREFIXES[service]
    schema = ingress.get(f"{prefix}/openapi.json")
    assert schema.status_code == 200
    assert schema.json()["info"]["title"] == TITLES[service]
    docs = ingress.get(f"{prefix}/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    assert f"{prefix}/openapi.json" in docs.text
    assert docs.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/", "/authx", "/nope"])
def test_internal_and_unknown_paths_are_not_routed(ingress: httpx.Client, path: str) -> None:
    response = ingress.get(path)
    assert response.status_code == 404
    assert "http_request_duration" not in response.text


def _audit_batch() -> dict[str, Any]:
    return {
        "events": [
            {
                "id": str(uuid.uuid4()),
                "type": "test.internal_route",
                "service": "pipeline",
                "actor": "e2e",
                "subject": "internal-routes",
                "occurred_at": datetime.now(UTC).isoformat(),
                "data": {},
            }
        ]
    }


INTERNAL_APIS = {"auth": "/auth/internal/users", "admin": "/admin/internal/audit-events"}
# The stack's account whose service token each internal API accepts.
INTERNAL_CALLERS = {"auth": "admin", "admin": "pipeline"}


@pytest.mark.parametrize("service", INTERNAL_APIS)
def test_internal_apis_answer_404_at_the_ingress_and_work_on_the_service_port(
    flightdeck_stack: Stack, ingress: httpx.Client, service: str
) -> None:
    """Even with a valid service token, the ingress never routes an internal API (Traefik's
    own 404: no service answered, so no request id); where the services call each other
    (the service's port) the same request is served."""
    path = INTERNAL_APIS[service]
    headers = {
        "Authorization": f"Bearer {service_token(flightdeck_stack, ingress, INTERNAL_CALLERS[service])}"
    }
    for method in ("GET", "POST"):
        body = _audit_batch() if service == "admin" else {}
        for variant in (path, f"{path}/", path.replace("/internal", "/%69nternal")):
            refused = ingress.request(method, variant, json=body, headers=headers)
            assert refused.status_code == 404, (method, variant, refused.text)
            assert "x-request-id" not in refused.headers, (method, variant)
    with httpx.Client(
        base_url=flightdeck_stack.service_call_url(service), timeout=10, trust_env=False
    ) as direct:
        if service == "auth":
            served = direct.get(path, params={"limit": 1}, headers=headers)
        else:
            served = direct.post(path, json=_audit_batch(), headers=headers)
        assert served.status_code == 200, served.text
        assert "x-request-id" in served.headers


@pytest.mark.parametrize("service", PREFIXES)
def test_unknown_route_is_a_problem_with_request_id(ingress: httpx.Client, service: str) -> None:
    response = ingress.get(f"{PREFIXES[service]}/no/such/thing", headers={"X-Request-ID": "e2e-1"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "e2e-1"
    assert response.json()["request_id"] == "e2e-1"


@pytest.mark.parametrize("service", PREFIXES)
def test_oversized_body_is_413_problem_through_the_ingress(
    ingress: httpx.Client, service: str
) -> None:
    response = ingress.post(f"{PREFIXES[service]}/anything", content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def login_as_bootstrap_admin(ingress: httpx.Client, stack: Stack) -> str:
    password = stack.config.extra_env["FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_PASSWORD"]
    response = ingress.post("/auth/login", json={"username": "admin", "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


# A JSON route of each service (public or not: bodies are measured before authentication).
JSON_ROUTES = {"auth": "/auth/login", "pipeline": "/pipelines", "admin": "/admin/users/1"}


@pytest.mark.parametrize("service", PREFIXES)
@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_json_is_a_400_problem_never_a_500(
    ingress: httpx.Client, service: str, depth: int
) -> None:
    method = "PATCH" if service == "admin" else "POST"
    response = ingress.request(
        method,
        JSON_ROUTES[service],
        content=b"[" * depth + b"]" * depth,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "json_too_deep"


def test_oversized_headers_are_431_at_the_ingress(ingress: httpx.Client) -> None:
    for headers in ({"cookie": "c" * 64 * 1024}, {f"x-field-{i}": "v" * 20 for i in range(1000)}):
        response = ingress.get("/auth/.well-known/jwks.json", headers=headers)
        assert response.status_code == 431
    assert ingress.get("/auth/.well-known/jwks.json").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"repository": "r" * 10_000}, id="10 KB filter value"),
        pytest.param([("repository", f"acme/r{i}") for i in range(60)], id="60 repeated values"),
    ],
)
def test_oversized_filters_are_422_problems(
    ingress: httpx.Client, flightdeck_stack: Stack, query: Any
) -> None:
    token = login_as_bootstrap_admin(ingress, flightdeck_stack)
    response = ingress.get(
        "/pipelines/stats", params=query, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_ten_thousand_repeated_filters_are_refused_at_the_ingress(flightdeck_stack: Stack) -> None:
    query = "&".join(f"repository=acme/repo-{i}" for i in range(10_000))  # ~220 KB of URL
    # Sent by hand: httpx refuses to build a URL this long.
    port = flightdeck_stack.config.ingress_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # Traefik may answer and close before the whole line is sent.
        with contextlib.suppress(ConnectionError):
            conn.sendall(f"GET /pipelines/stats?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status_line = conn.makefile("rb").readline()
    assert status_line.split()[1] == b"431", status_line


@pytest.mark.parametrize("service", PREFIXES)
def test_each_service_port_serves_health_readiness_and_metrics(
    flightdeck_stack: Stack, service: str
) -> None:
    base = flightdeck_stack.service_url(service)
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as direct:
        assert direct.get("/healthz").json() == {"status": "ok"}
        ready = direct.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"]["status"] == "ok"
        metrics = direct.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        # Requests made through the ingress above are counted under their route template.
        assert "http_request_duration_seconds_bucket" in metrics.text
        assert f'handler="{PREFIXES[service]}/openapi.json"' in metrics.text


def test_client_address_comes_from_the_ingress_not_the_client(
    flightdeck_stack: Stack, ingress: httpx.Client
) -> None:
    # A spoofed X-Forwarded-For is replaced by Traefik; uvicorn trusts only the ingress.
    response = ingress.get("/auth/no-such-thing", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 404
    # The access line is written after the response is sent: wait for it a little.
    deadline = time.monotonic() + 5
    while True:
        log = flightdeck_stack.log_path("auth", 0).read_text()
        lines = [line for line in log.splitlines() if response.headers["x-request-id"] in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines, "access log line with the request id"
    assert '"client_ip": "127.0.0.1"' in lines[-1]
    assert "203.0.113.9" not in lines[-1]
