"""Process-wide resources made in the lifespan and kept on ``app.state.resources``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from flightdeck_common.rate_limit import RateLimiter
from flightdeck_common.settings import CommonSettings


@dataclass
class Resources:
    settings: CommonSettings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    rate_limiter: RateLimiter
    redis: Redis | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # Sessions for requests that only read (``ReadSessionDep``); None: ``sessionmaker``.
    read_sessionmaker: async_sessionmaker[AsyncSession] | None = None
    # One-connection engine of the readiness probe (``db.create_probe_engine``); None: ``engine``.
    probe_engine: AsyncEngine | None = None


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources
