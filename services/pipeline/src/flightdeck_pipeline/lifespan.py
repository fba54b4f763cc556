"""The pipeline service's startup: the runtime that write paths use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI

from flightdeck_common.db import is_sqlite, session_scope, utcnow
from flightdeck_common.resources import Resources
from flightdeck_pipeline.events.repository import ChangeEventRepository
from flightdeck_pipeline.metrics.cache import MetricsCache
from flightdeck_pipeline.runtime import PipelineRuntime
from flightdeck_pipeline.settings import Settings
from flightdeck_pipeline.webhooks.acceptance import DeliveryAcceptor
from flightdeck_pipeline.webhooks.metrics import BACKLOG_LIMIT
from flightdeck_pipeline.webhooks.rejection_audit import (
    audit_rejections_periodically,
    flush_rejections,
)
from flightdeck_pipeline.webhooks.rejections import SignatureRejections
from flightdeck_pipeline.webhooks.repository import DeliveryRepository
from flightdeck_pipeline.webhooks.service import WebhookService
from flightdeck_pipeline.webhooks.worker import DeliveryWorker

logger = logging.getLogger(__name__)

# Mapping batch size at most on SQLite (a batch holds the database's only write lock).
SQLITE_MAPPING_BATCH_SIZE = 25


@contextlib.asynccontextmanager
async def pipeline_lifespan(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
    """Runs after the events hook: the change bus exists by then."""
    settings = resources.settings
    assert isinstance(settings, Settings)
    cache = MetricsCache(
        resources.redis,
        settings.metrics_cache_ttl_seconds,
        max_concurrent=settings.metrics_max_concurrent_computations,
    )
    app.state.metrics_cache = cache
    runtime = PipelineRuntime(
        settings=settings,
        change_bus=getattr(app.state, "change_bus", None),
        metrics_cache=cache,
    )
    app.state.pipeline_runtime = runtime
    acceptor = DeliveryAcceptor(
        resources.sessionmaker, max_batch=settings.webhook_accept_batch_size
    )
    batch_size = settings.webhook_mapping_batch_size
    if is_sqlite(settings.database_url):
        # One writer at a time: shorter mapping transactions keep acceptance waiting less.
        batch_size = min(batch_size, SQLITE_MAPPING_BATCH_SIZE)
    worker = DeliveryWorker(
        resources.sessionmaker,
        runtime,
        batch_size=batch_size,
        poll_seconds=settings.webhook_mapping_poll_seconds,
        mapping=settings.webhook_mapping_enabled,
        yield_to=acceptor.idle,
    )
    acceptor.on_stored = worker.accepted
    app.state.delivery_worker = worker
    app.state.webhook_service = WebhookService(settings, acceptor, worker)
    BACKLOG_LIMIT.set(settings.webhook_backlog_limit)
    worker.start()
    housekeeping = asyncio.create_task(
        _housekeeping(resources, settings), name="pipeline-housekeeping"
    )
    rejections = app.state.webhook_signature_rejections = SignatureRejections()
    rejection_audit = asyncio.create_task(
        audit_rejections_periodically(
            resources.sessionmaker, rejections, settings.webhook_rejection_audit_interval_seconds
        ),
        name="pipeline-rejection-audit",
    )
    try:
        yield
    finally:
        await acceptor.close()
        await worker.stop()
        for task in (housekeeping, rejection_audit):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:  # what the last interval tallied is audited too
            await flush_rejections(resources.sessionmaker, rejections)
        except Exception:
            logger.exception("could not audit the last rejected webhook signatures")


async def _housekeeping(resources: Resources, settings: Settings, interval: float = 3600.0) -> None:
    """Drop finished raw deliveries past their retention (dedupe needs them for 7 days at least) and
    change events no reconnect can ask for any more."""
    while True:
        try:
            async with session_scope(resources.sessionmaker) as session:
                purged = await DeliveryRepository(session).purge_older_than(
                    settings.delivery_retention_days
                )
                # Change events past the replay bound and a day old serve no reconnect.
                await ChangeEventRepository(session).prune(
                    keep_last=settings.sse_replay_limit, older_than=utcnow() - timedelta(days=1)
                )
            if purged:
                logger.info(
                    "purged %d deliveries older than %d days",
                    purged,
                    settings.delivery_retention_days,
                )
        except Exception:
            logger.exception("pipeline housekeeping failed; retrying later")
        await asyncio.sleep(interval)
