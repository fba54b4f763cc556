"""Graceful shutdown: a stop signal first takes the process out of load balancing.

On SIGTERM (or Ctrl-C) with ``shutdown_drain_seconds`` > 0, ``/readyz`` answers 503
``draining`` at once while the service keeps serving; after the drain time uvicorn stops
accepting connections, finishes the requests in flight (``timeout_graceful_shutdown``)
and runs the lifespan shutdown (outbox relay flush, pools closed). A load balancer that
health-checks ``/readyz`` more often than the drain time (Traefik, a Kubernetes readiness
probe) has taken the instance out before it stops, so nobody sees a refused connection.
A second signal stops at once, as uvicorn does.
"""

from __future__ import annotations

import logging
import threading
from types import FrameType

import uvicorn

logger = logging.getLogger(__name__)

# Set once this process was asked to stop; /readyz then answers 503 (see health.py).
DRAINING = threading.Event()


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain period between the stop signal and the shutdown."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_seconds <= 0 or DRAINING.is_set() or self.should_exit:
            DRAINING.set()
            super().handle_exit(sig, frame)
            return
        DRAINING.set()
        logger.info("stop signal %s: not ready from now, stopping in %g s", sig, self.drain_seconds)
        timer = threading.Timer(self.drain_seconds, super().handle_exit, args=(sig, None))
        timer.daemon = True
        timer.start()
