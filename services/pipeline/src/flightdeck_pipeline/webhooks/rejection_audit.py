"""Rejected webhook signatures reach the audit chain aggregated: one event per source per
interval (``rejections.py`` tallies them), written by the pipeline's lifespan."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from flightdeck_common.db import session_scope
from flightdeck_pipeline.outbox import audit
from flightdeck_pipeline.webhooks.rejections import SignatureRejections

logger = logging.getLogger(__name__)
EVENT_TYPE = "webhook.signature_rejected"


async def flush_rejections(
    sessionmaker: async_sessionmaker[AsyncSession], rejections: SignatureRejections
) -> int:
    """Write one ``pipeline.webhook.signature_rejected`` event per source tallied since
    the last flush, in one transaction; how many were written. When the write fails
    (the database is down), the tallies are put back for the next flush and it raises."""
    summaries = rejections.take()
    if not summaries:
        return 0
    try:
        async with session_scope(sessionmaker) as session:
            for summary in summaries:
                await audit(session, EVENT_TYPE, actor=None, ip=summary.source, **summary.data)
    except BaseException:
        rejections.put_back(summaries)
        raise
    return len(summaries)


async def audit_rejections_periodically(
    sessionmaker: async_sessionmaker[AsyncSession],
    rejections: SignatureRejections,
    interval: float,
) -> None:
    """Flush the tallies every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await flush_rejections(sessionmaker, rejections)
        except Exception:
            logger.exception("could not audit rejected webhook signatures; next interval")
