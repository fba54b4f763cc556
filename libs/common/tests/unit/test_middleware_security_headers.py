"""Security headers on every response; the docs CSP only on docs pages; HSTS only over TLS."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, Response

from flightdeck_common.middleware.security_headers import (
    API_CSP,
    DOCS_CSP,
    SecurityHeadersMiddleware,
)

router = APIRouter(prefix="/things")


@router.get("/plain")
async def read_plain() -> dict[str, str]:
    """A plain JSON route."""
    return {"ok": "yes"}


@router.get("/own-policy")
async def read_with_own_policy(response: Response) -> dict[str, str]:
    """A route that sets its own framing and CSP policy."""
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Content-Security-Policy"] = "default-src 'self'"
    return {"ok": "yes"}


@router.get("/crash")
async def crash() -> dict[str, str]:
    """Fail unexpectedly."""
    raise RuntimeError("boom")


BASELINE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


@pytest.fixture
async def service(start_service: Any) -> Any:
    return await start_service(router)


def assert_baseline(response: Any) -> None:
    for name, value in BASELINE.items():
        assert response.headers.get(name) == value, name
    assert "camera=()" in response.headers["permissions-policy"]


def test_api_csp_forbids_everything() -> None:
    directives = dict(d.strip().split(" ", 1) for d in API_CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in API_CSP


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/things/plain", 200),
        ("GET", "/things/nope", 404),
        ("DELETE", "/things/plain", 405),
        ("GET", "/things/crash", 500),
        ("GET", "/healthz", 200),
        ("GET", "/things/openapi.json", 200),
    ],
)
async def test_every_response_has_the_api_headers(
    service: Any, method: str, path: str, status: int
) -> None:
    response = await service.client.request(method, path)
    assert response.status_code == status
    assert_baseline(response)
    assert response.headers["content-security-policy"] == API_CSP


async def test_headers_on_body_limit_rejections(start_service: Any, make_settings: Any) -> None:
    service = await start_service(router, settings=make_settings(max_body_bytes=1024))
    response = await service.client.post("/things/plain", content=b"x" * 2048)
    assert response.status_code == 413
    assert_baseline(response)


@pytest.mark.parametrize("path", ["/things/docs", "/things/redoc"])
async def test_docs_pages_get_the_docs_csp_and_render(service: Any, path: str) -> None:
    response = await service.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/things/openapi.json" in response.text
    assert response.headers["content-security-policy"] == DOCS_CSP
    assert_baseline(response)


async def test_docs_csp_allows_what_swagger_ui_loads(service: Any) -> None:
    html = (await service.client.get("/things/docs")).text
    assert "https://cdn.jsdelivr.net/" in html
    assert "https://cdn.jsdelivr.net" in DOCS_CSP.split("script-src", 1)[1].split(";", 1)[0]
    assert "frame-ancestors 'none'" in DOCS_CSP


async def test_docs_csp_only_on_exact_docs_paths(service: Any) -> None:
    response = await service.client.get("/things/docs/extra")
    assert response.headers["content-security-policy"] == API_CSP


async def test_route_headers_are_not_overridden(service: Any) -> None:
    response = await service.client.get("/things/own-policy")
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["content-security-policy"] == "default-src 'self'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]


async def test_no_hsts_over_plain_http(service: Any) -> None:
    response = await service.client.get("/things/plain")
    assert "strict-transport-security" not in response.headers


async def test_hsts_over_https(start_service: Any, make_settings: Any) -> None:
    service = await start_service(
        router, settings=make_settings(hsts_max_age_seconds=31536000), base_url="https://test"
    )
    response = await service.client.get("/things/plain")
    assert response.headers["strict-transport-security"] == ("max-age=31536000; includeSubDomains")
    # Errors are served over TLS too.
    missing = await service.client.get("/things/nope")
    assert (
        missing.headers["strict-transport-security"]
        == response.headers["strict-transport-security"]
    )


async def test_hsts_disabled_with_zero_max_age(start_service: Any, make_settings: Any) -> None:
    service = await start_service(
        router, settings=make_settings(hsts_max_age_seconds=0), base_url="https://test"
    )
    response = await service.client.get("/things/plain")
    assert "strict-transport-security" not in response.headers
    assert_baseline(response)


async def test_non_http_scopes_pass_through_untouched() -> None:
    calls: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        await send({"type": "websocket.close", "code": 1000})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    await SecurityHeadersMiddleware(inner)({"type": "websocket", "path": "/"}, receive, send)
    assert calls == ["websocket"]
    assert sent == [{"type": "websocket.close", "code": 1000}]
