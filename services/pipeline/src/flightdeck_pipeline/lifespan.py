"""The pipeline service's startup: the runtime that write paths use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from flightdeck_common.resources import Resources
from flightdeck_pipeline.metrics.cache import MetricsCache
from flightdeck_pipeline.runtime import PipelineRuntime
from flightdeck_pipeline.settings import Settings


@contextlib.asynccontextmanager
async def pipeline_lifespan(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
    """Runs after the events hook: the change bus exists by then."""
    settings = resources.settings
    assert isinstance(settings, Settings)
    cache = MetricsCache(resources.redis, settings.metrics_cache_ttl_seconds)
    app.state.metrics_cache = cache
    app.state.pipeline_runtime = PipelineRuntime(
        settings=settings,
        change_bus=getattr(app.state, "change_bus", None),
        metrics_cache=cache,
    )
    yield
