"""Prometheus metrics: HTTP histograms labelled by route template, domain metric helpers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from flightdeck_common.errors import NotFound
from flightdeck_common.metrics import NOT_INSTRUMENTED, counter, gauge, histogram
from flightdeck_common.service_app import ServiceSpec, create_service_app

ITEM_ROUTE = "/things/metered/{item_id}"

router = APIRouter(prefix="/things")


@router.get("/metered/{item_id}")
async def read_metered_item(item_id: int) -> dict[str, int]:
    """Return an item, or 404 for item 0."""
    if item_id == 0:
        raise NotFound("no item 0")
    return {"item_id": item_id}


@router.get("/metered-crash")
async def crash_metered() -> dict[str, int]:
    """Fail unexpectedly."""
    raise RuntimeError("boom")


@router.get("/metrics/summary")
async def read_metrics_summary() -> dict[str, int]:
    """A public route whose path merely contains "/metrics"."""
    return {"runs": 1}


@pytest.fixture
async def client(start_service: Any) -> Any:
    return (await start_service(router)).client


async def scrape(client: Any) -> dict[str, Any]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, Any], family: str, sample_name: str, **labels: str) -> float:
    """The value of one sample (0 when absent); labels must match exactly."""
    for item in families[family].samples if family in families else ():
        if item.name == sample_name and item.labels == labels:
            return float(item.value)
    return 0.0


def handlers(families: dict[str, Any], family: str) -> set[str]:
    return {s.labels["handler"] for s in families[family].samples if "handler" in s.labels}


async def test_latency_histogram_is_labelled_by_route_template(client: Any) -> None:
    for item_id in (1, 2, 3):
        assert (await client.get(f"/things/metered/{item_id}")).status_code == 200
    families = await scrape(client)
    histogram_family = families["http_request_duration_seconds"]
    assert histogram_family.type == "histogram"
    count = value(
        families,
        "http_request_duration_seconds",
        "http_request_duration_seconds_count",
        handler=ITEM_ROUTE,
        method="GET",
    )
    assert count == 3
    seen = handlers(families, "http_request_duration_seconds")
    assert ITEM_ROUTE in seen
    assert not any(h.startswith("/things/metered/") and h != ITEM_ROUTE for h in seen)
    buckets = {
        float(s.labels["le"])
        for s in histogram_family.samples
        if s.name.endswith("_bucket") and s.labels["handler"] == ITEM_ROUTE
    }
    assert {0.005, 0.25, 10.0} <= buckets


async def test_request_counter_keeps_exact_status_codes(client: Any) -> None:
    assert (await client.get("/things/metered/0")).status_code == 404
    assert (await client.get("/things/metered/0")).status_code == 404
    assert (await client.get("/things/metered/5")).status_code == 200
    assert (await client.get("/things/metered-crash")).status_code == 500
    families = await scrape(client)

    def requests(handler: str, status: str) -> float:
        return value(
            families,
            "http_requests",
            "http_requests_total",
            handler=handler,
            method="GET",
            status=status,
        )

    assert requests(ITEM_ROUTE, "404") == 2
    assert requests(ITEM_ROUTE, "200") == 1
    assert requests(ITEM_ROUTE, "4xx") == 0
    assert requests("/things/metered-crash", "500") == 1


async def test_unknown_paths_are_not_labelled(client: Any) -> None:
    assert (await client.get("/things/nowhere-7f3a")).status_code == 404
    assert (await client.get("/wp-login.php")).status_code == 404
    text = (await client.get("/metrics")).text
    assert "nowhere-7f3a" not in text
    assert "wp-login" not in text
    assert 'handler="none"' not in text


@pytest.mark.parametrize("path", NOT_INSTRUMENTED)
async def test_probe_endpoints_are_not_instrumented(client: Any, path: str) -> None:
    await client.get(path)
    await client.get("/things/metered/1")
    families = await scrape(client)
    seen = handlers(families, "http_requests")
    assert ITEM_ROUTE in seen
    assert path not in seen


async def test_routes_that_contain_a_probe_path_are_still_instrumented(client: Any) -> None:
    assert (await client.get("/things/metrics/summary")).status_code == 200
    families = await scrape(client)
    assert "/things/metrics/summary" in handlers(families, "http_requests")


async def test_domain_metrics_are_served_with_http_metrics(client: Any) -> None:
    families = await scrape(client)
    info = [
        s
        for s in families["flightdeck_service_info"].samples
        if s.labels == {"service": "test", "version": "1.2.3"}
    ]
    assert [s.value for s in info] == [1.0]
    assert "http_request_duration_seconds" in families


async def test_two_apps_in_one_process_count_separately(start_service: Any) -> None:
    first = (await start_service(router)).client
    second = (await start_service(router)).client
    await first.get("/things/metered/1")
    await first.get("/things/metered/2")
    await second.get("/things/metered/3")

    def count(families: dict[str, Any]) -> float:
        return value(
            families,
            "http_request_duration_seconds",
            "http_request_duration_seconds_count",
            handler=ITEM_ROUTE,
            method="GET",
        )

    assert count(await scrape(first)) == 2
    assert count(await scrape(second)) == 1


async def test_two_apps_built_directly_both_serve(make_settings: Any) -> None:
    apps = [
        create_service_app(make_settings(), ServiceSpec(title="t", description="d", version="1"))
        for _ in range(2)
    ]
    for app in apps:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200


# --- domain metric helpers -------------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_counter_is_declared_once(registry: CollectorRegistry) -> None:
    first = counter("flightdeck_test_logins_total", "Logins.", ("result",), registry=registry)
    again = counter("flightdeck_test_logins_total", "Logins.", ("result",), registry=registry)
    assert isinstance(first, Counter)
    assert again is first
    first.labels("ok").inc()
    again.labels("ok").inc()
    assert registry.get_sample_value("flightdeck_test_logins_total", {"result": "ok"}) == 2


def test_gauge_is_declared_once(registry: CollectorRegistry) -> None:
    first = gauge("flightdeck_test_outbox_pending", "Pending.", registry=registry)
    assert isinstance(first, Gauge)
    assert gauge("flightdeck_test_outbox_pending", "Pending.", registry=registry) is first
    first.set(4)
    assert registry.get_sample_value("flightdeck_test_outbox_pending") == 4


def test_histogram_is_declared_once_with_its_buckets(registry: CollectorRegistry) -> None:
    first = histogram("flightdeck_test_seconds", "Time.", buckets=(0.1, 1.0), registry=registry)
    assert isinstance(first, Histogram)
    assert histogram("flightdeck_test_seconds", "Time.", registry=registry) is first
    first.observe(0.5)
    assert registry.get_sample_value("flightdeck_test_seconds_bucket", {"le": "0.1"}) == 0
    assert registry.get_sample_value("flightdeck_test_seconds_bucket", {"le": "1.0"}) == 1


@pytest.mark.parametrize(
    ("declare_first", "declare_second"),
    [(counter, gauge), (gauge, histogram), (histogram, counter), (gauge, counter)],
)
def test_kind_mismatch_raises(
    registry: CollectorRegistry, declare_first: Any, declare_second: Any
) -> None:
    declare_first("flightdeck_test_metric", "Doc.", registry=registry)
    with pytest.raises(ValueError, match="flightdeck_test_metric"):
        declare_second("flightdeck_test_metric", "Doc.", registry=registry)


def test_helpers_default_to_the_global_registry() -> None:
    metric = gauge("flightdeck_unit_test_global_gauge", "Doc.")
    try:
        assert REGISTRY._names_to_collectors["flightdeck_unit_test_global_gauge"] is metric
    finally:
        REGISTRY.unregister(metric)
