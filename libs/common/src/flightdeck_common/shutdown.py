"""Graceful shutdown: a stop signal first takes the process out of load balancing.

On SIGTERM (or Ctrl-C) with ``shutdown_drain_seconds`` > 0, ``/readyz`` answers 503
``draining`` at once while the service keeps serving; after the drain time uvicorn stops
accepting connections, finishes the requests in flight (``timeout_graceful_shutdown``)
and runs the lifespan shutdown (outbox relay flush, pools closed). A load balancer that
health-checks ``/readyz`` more often than the drain time (Traefik, a Kubernetes readiness
probe) has taken the instance out before it stops, so nobody sees a refused connection.
A second signal stops at once, as uvicorn does.

``python -m flightdeck_common.shutdown <module:factory> --port N --drain-seconds S`` runs an
app factory under this server (the local stack's replicas, ``make run-cluster``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import uvicorn

from flightdeck_common.http_server import guarded_protocol
from flightdeck_common.settings import DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_HEADER_BYTES

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


# Exit status when the server could not start (as `uvicorn.run` exits).
STARTUP_FAILURE = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Serve an app factory (``module:function``) under :class:`DrainingServer`, configured
    as ``flightdeck-<service> serve`` does (proxy headers, no access log, 10 s graceful
    shutdown, the app's own logging, limits on request heads)."""
    parser = argparse.ArgumentParser(prog="python -m flightdeck_common.shutdown")
    parser.add_argument("app", help="app factory, e.g. flightdeck_auth.app:create_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="addresses of the ingress whose X-Forwarded-* headers are trusted",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="after a stop signal, answer /readyz 503 this long before shutting down",
    )
    parser.add_argument(
        "--max-header-bytes",
        type=int,
        default=DEFAULT_MAX_HEADER_BYTES,
        help="request line plus headers above this get 431",
    )
    parser.add_argument(
        "--header-read-timeout",
        type=float,
        default=DEFAULT_HEADER_READ_TIMEOUT,
        help="seconds a connection may take to send a complete request head",
    )
    args = parser.parse_args(argv)
    return serve(
        args.app,
        args.host,
        args.port,
        args.forwarded_allow_ips,
        args.drain_seconds,
        max_header_bytes=args.max_header_bytes,
        header_read_timeout=args.header_read_timeout,
    )


def serve(
    app: str,
    host: str,
    port: int,
    forwarded_allow_ips: str,
    drain_seconds: float,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    header_read_timeout: float = DEFAULT_HEADER_READ_TIMEOUT,
) -> int:
    """Run the app factory ``app`` until stopped; the exit status (3: could not start).

    Requests are parsed by httptools with a size and a time limit on request heads
    (:mod:`flightdeck_common.http_server`); ``h11_max_incomplete_event_size`` says the
    same size limit to the h11 parser, should anyone select it.
    """
    config = uvicorn.Config(
        app,
        factory=True,
        host=host,
        port=port,
        http=guarded_protocol(max_header_bytes, header_read_timeout),
        h11_max_incomplete_event_size=max_header_bytes,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        access_log=False,
        timeout_graceful_shutdown=10,
        log_config=None,
    )
    server = DrainingServer(config, drain_seconds)
    server.run()
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    # Through the imported module: health.py reads *its* DRAINING, not this __main__'s copy.
    from flightdeck_common.shutdown import main as _main

    sys.exit(_main())
