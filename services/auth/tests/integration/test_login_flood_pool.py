"""A login flood waits for argon2 without holding database connections, so the rest of the
service (readiness included) keeps its pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from flightdeck_common.passwords import MAX_CONCURRENT_HASHES

LOGINS = 8 * MAX_CONCURRENT_HASHES


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql+redis"], indirect=True)
async def test_readiness_stays_up_while_logins_queue_for_hashing(
    harness_factory: Callable[..., Any],
) -> None:
    # One connection, no overflow: a login holding it through its queued verification
    # would make every other request wait for the pool (and /readyz time out).
    auth = await harness_factory(
        database_pool_size=1,
        database_max_overflow=0,
        database_pool_timeout_seconds=1.0,
        readiness_timeout_seconds=1.0,
    )
    assert (await auth.client.get("/readyz")).status_code == 200

    logins = [asyncio.create_task(auth.login()) for _ in range(LOGINS)]
    probes: list[tuple[int, float]] = []
    while not all(task.done() for task in logins):
        started = time.perf_counter()
        response = await auth.client.get("/readyz")
        probes.append((response.status_code, time.perf_counter() - started))
        await asyncio.sleep(0.02)
    answers = await asyncio.gather(*logins)

    assert [a.status_code for a in answers] == [200] * LOGINS
    assert len(probes) >= 3, "the logins finished before readiness was probed"
    assert [status for status, _ in probes] == [200] * len(probes)
