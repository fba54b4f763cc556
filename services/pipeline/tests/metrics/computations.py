"""Helpers of the metrics cache tests: a counting computation (each call answers the next
number) and the cache's own lookup counter."""

from __future__ import annotations

from prometheus_client import REGISTRY
from pydantic import BaseModel


class Answer(BaseModel):
    value: int


def cached_body(value: int) -> bytes:
    """The response body the cache keeps for ``Answer(value=value)``."""
    return b'{"value":%d}' % value


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> Answer:
        self.calls += 1
        return Answer(value=self.calls)


def cache_count(endpoint: str, result: str) -> float:
    """``flightdeck_metrics_cache_total`` for ``endpoint`` and ``result`` (hit, miss, error)."""
    labels = {"endpoint": endpoint, "result": result}
    return REGISTRY.get_sample_value("flightdeck_metrics_cache_total", labels) or 0.0
