"""Failing a request without losing what it recorded."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from flightdeck_common.errors import FlightdeckError


async def keep_and_fail(session: AsyncSession, error: FlightdeckError) -> FlightdeckError:
    """Commit the transaction (audit events, counters, revocations), then return ``error``
    for the caller to raise; the request dependency would otherwise roll it all back."""
    await session.commit()
    return error
