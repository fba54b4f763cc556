"""Local development stack: PostgreSQL, Redis, the services under uvicorn, Traefik in front.

Used by ``make run`` / ``make run-full`` (``python -m flightdeck_common.devstack run``) and
by the test session (real PostgreSQL/Redis on free ports, end-to-end tests through Traefik).
Standard library plus httpx only.
"""

from flightdeck_common.devstack.ports import free_port, port_in_use, wait_for_http, wait_for_port
from flightdeck_common.devstack.postgres import PostgresServer
from flightdeck_common.devstack.processes import DevstackError, ManagedProcess, ProcessExitedError
from flightdeck_common.devstack.redis import RedisServer
from flightdeck_common.devstack.stack import (
    PortInUseError,
    Stack,
    StackConfig,
    StackStartError,
)
from flightdeck_common.devstack.traefik import TraefikProcess, render_traefik_config

__all__ = [
    "DevstackError",
    "ManagedProcess",
    "PortInUseError",
    "PostgresServer",
    "ProcessExitedError",
    "RedisServer",
    "Stack",
    "StackConfig",
    "StackStartError",
    "TraefikProcess",
    "free_port",
    "port_in_use",
    "render_traefik_config",
    "wait_for_http",
    "wait_for_port",
]
