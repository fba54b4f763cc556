"""The whole local stack: services under uvicorn, Traefik in front, PostgreSQL/Redis optional."""

from __future__ import annotations

import functools
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from flightdeck_common.devstack.lifecycle import StartStop
from flightdeck_common.devstack.ports import LOOPBACK, port_in_use, wait_for_http
from flightdeck_common.devstack.postgres import PostgresServer
from flightdeck_common.devstack.processes import DevstackError, ManagedProcess
from flightdeck_common.devstack.redis import RedisServer
from flightdeck_common.devstack.traefik import (
    DEFAULT_INGRESS_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_SERVICE_PORTS,
    ROUTE_PREFIXES,
    TraefikProcess,
    default_upstreams,
    render_traefik_config,
)

SERVICES: tuple[str, ...] = ("auth", "pipeline", "admin")
DEFAULT_POSTGRES_PORT = 54320
DEFAULT_REDIS_PORT = 63790
SERVICE_STOP_TIMEOUT = 15.0  # uvicorn gets --timeout-graceful-shutdown 10
ROUTE_TIMEOUT = 30.0  # Traefik's file provider may take a moment to load the routes


class StackStartError(DevstackError):
    """The stack could not start; the message carries the failing process's log tail."""


class PortInUseError(DevstackError):
    """A port the stack needs is already taken."""

    def __init__(self, port: int, purpose: str) -> None:
        self.port = port
        self.purpose = purpose
        super().__init__(f"port {port} ({purpose}) is already in use on {LOOPBACK}")


def full_mode_postgres(var_dir: Path, port: int = DEFAULT_POSTGRES_PORT) -> PostgresServer:
    """The PostgreSQL of ``make run-full`` (also driven by the ``postgres`` subcommand)."""
    return PostgresServer(
        var_dir.absolute() / "postgres",
        port,
        [f"flightdeck_{service}" for service in SERVICES],
        durable=True,
        log_path=var_dir.absolute() / "logs" / "postgres.log",
    )


def database_env_var(service: str) -> str:
    """``FLIGHTDECK_<SERVICE>_DATABASE_URL``."""
    return f"FLIGHTDECK_{service.upper()}_DATABASE_URL"


@dataclass
class StackConfig:
    """What to run and where. ``var_dir`` holds databases, logs and rendered Traefik config."""

    var_dir: Path
    ingress_port: int = DEFAULT_INGRESS_PORT
    service_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SERVICE_PORTS))
    full: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    services: list[str] = field(default_factory=lambda: list(SERVICES))
    app_module_template: str = "flightdeck_{service}.app:create_app"
    """uvicorn app factory per service; ``{service}`` is replaced by the service name."""
    metrics_port: int = DEFAULT_METRICS_PORT
    postgres_port: int = DEFAULT_POSTGRES_PORT
    redis_port: int = DEFAULT_REDIS_PORT
    startup_timeout: float = 60.0
    """How long each service may take to answer ``/healthz`` (migrations run at start)."""


class Stack(StartStop):
    """Start and stop the local stack as real processes (see ``StackConfig``).

    ``start()`` brings up PostgreSQL and Redis (``full``), the services concurrently (each
    waited for on ``/healthz``), then Traefik (``/ping``) and waits until every service
    answers ``<prefix>/openapi.json`` through it. Any failure stops everything and raises
    ``StackStartError`` with the failing log's tail. ``stop()`` goes in reverse order:
    Traefik, services, Redis, PostgreSQL. Logs: ``<var_dir>/logs/<name>.log``.
    """

    def __init__(self, config: StackConfig) -> None:
        unknown = [name for name in config.services if name not in config.service_ports]
        if unknown:
            raise ValueError(f"no port configured for service(s) {unknown}")
        self.config = config
        self.var_dir = config.var_dir.absolute()
        self.log_dir = self.var_dir / "logs"
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.processes: dict[str, ManagedProcess] = {}
        self.traefik: TraefikProcess | None = None

    # -- addresses --------------------------------------------------------------------

    @property
    def ingress_url(self) -> str:
        """``http://127.0.0.1:<ingress_port>``."""
        return f"http://{LOOPBACK}:{self.config.ingress_port}"

    def service_url(self, service: str) -> str:
        """A service's own root URL (where ``/healthz``, ``/readyz``, ``/metrics`` live)."""
        return f"http://{LOOPBACK}:{self.config.service_ports[service]}"

    def service_env(self) -> dict[str, str]:
        """Variables the stack sets for every service (on top of ours and ``extra_env``)."""
        env = {"PYTHONUNBUFFERED": "1"}
        for service in dict.fromkeys([*SERVICES, *self.config.services]):
            database = f"flightdeck_{service}"
            if self.postgres is not None:
                env[database_env_var(service)] = self.postgres.url(database)
            else:
                env[database_env_var(service)] = (
                    f"sqlite+aiosqlite:///{self.var_dir / f'{service}.db'}"
                )
        if self.redis is not None:
            env["REDIS_URL"] = self.redis.url
        if "auth" in self.config.service_ports:
            env["AUTH_URL"] = self.service_url("auth")
        if "admin" in self.config.service_ports:
            env["ADMIN_URL"] = self.service_url("admin")
        env |= self._service_accounts
        return env

    @functools.cached_property
    def _service_accounts(self) -> dict[str, str]:
        """Client credentials for pipeline and admin, made fresh for each run: auth's
        development bootstrap (re-)keys the accounts from the same values at start."""
        accounts = {
            "pipeline": "flightdeck:auth-internal flightdeck:admin-internal",
            "admin": "flightdeck:auth-internal",
        }
        env: dict[str, str] = {}
        specs = []
        for client_id, audiences in accounts.items():
            secret = secrets.token_urlsafe(32)
            specs.append(f"{client_id}:{secret}:{audiences}")
            env[f"FLIGHTDECK_{client_id.upper()}_SERVICE_CLIENT_ID"] = client_id
            env[f"FLIGHTDECK_{client_id.upper()}_SERVICE_CLIENT_SECRET"] = secret
        env["FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS"] = ",".join(specs)
        return env

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Start everything, or stop what was started and raise."""
        try:
            self._check_ports()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if self.config.full:
                self._start_backing_services()
            self._start_services()
            self._start_traefik()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Traefik, then the services, then Redis, then PostgreSQL; idempotent."""
        errors: list[Exception] = []

        def attempt(action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:  # keep stopping the rest
                errors.append(exc)

        if self.traefik is not None:
            attempt(self.traefik.stop)
        for process in self.processes.values():
            process.terminate()  # all at once; then wait for each
        for process in self.processes.values():
            attempt(functools.partial(process.stop, SERVICE_STOP_TIMEOUT))
        if self.redis is not None:
            attempt(self.redis.stop)
        if self.postgres is not None:
            attempt(self.postgres.stop)
        if errors:
            raise DevstackError(f"stopping the stack failed: {errors}") from errors[0]

    def stop_service(self, service: str) -> None:
        """Stop one service (SIGTERM, graceful drain): Traefik keeps routing to the others."""
        self.processes[service].stop(SERVICE_STOP_TIMEOUT)

    def start_service(self, service: str) -> None:
        """Start a stopped service again and wait until it answers ``/healthz`` and the
        ingress routes to it again (Traefik's health check takes it back in)."""
        process = self.processes[service]
        process.start()
        self._wait(f"{self.service_url(service)}/healthz", process, self.config.startup_timeout)
        if self.traefik is not None:
            prefix = ROUTE_PREFIXES.get(service, f"/{service}")
            self._wait(f"{self.ingress_url}{prefix}/openapi.json", process, ROUTE_TIMEOUT)

    def check(self) -> None:
        """Raise ``DevstackError`` (with the log tail) if a service or Traefik has died.

        PostgreSQL and Redis are not checked here: the services are built to survive
        their outages (readiness turns 503, requests get 503 problems) and recover by
        themselves, and ``make run-full`` is where people try exactly that.
        """
        for process in self.processes.values():
            process.ensure_running()
        if self.traefik is not None:
            self.traefik.process.ensure_running()

    def backing_services_down(self) -> list[str]:
        """Names of the backing servers (``postgres``, ``redis``) that are not running."""
        down = []
        if self.postgres is not None and not self.postgres.is_running():
            down.append("postgres")
        if self.redis is not None and not self.redis.is_running:
            down.append("redis")
        return down

    # -- internals --------------------------------------------------------------------

    def _check_ports(self) -> None:
        config = self.config
        wanted = [(config.ingress_port, "ingress"), (config.metrics_port, "Traefik metrics")]
        wanted += [(config.service_ports[name], name) for name in config.services]
        if config.full:
            wanted += [(config.postgres_port, "PostgreSQL"), (config.redis_port, "Redis")]
        for port, purpose in wanted:
            if port_in_use(port):
                raise PortInUseError(port, purpose)

    def _start_backing_services(self) -> None:
        self.postgres = full_mode_postgres(self.var_dir, self.config.postgres_port)
        self.postgres.start()
        self.redis = RedisServer(
            self.var_dir / "redis", self.config.redis_port, log_path=self.log_dir / "redis.log"
        )
        self.redis.start()

    def _start_services(self) -> None:
        env = {**os.environ}
        env.pop("REDIS_URL", None)  # embedded mode means in-process, unless extra_env says so
        env |= self.service_env() | self.config.extra_env
        for service in self.config.services:
            argv = [
                sys.executable, "-m", "uvicorn",
                self.config.app_module_template.format(service=service), "--factory",
                "--host", LOOPBACK, "--port", str(self.config.service_ports[service]),
                "--proxy-headers", "--forwarded-allow-ips", LOOPBACK,
                "--no-access-log", "--timeout-graceful-shutdown", "10",
            ]  # fmt: skip
            process = ManagedProcess(service, argv, env, self.log_dir / f"{service}.log")
            self.processes[service] = process  # registered first: stop() must see it
            process.start()
        for service, process in self.processes.items():
            self._wait(f"{self.service_url(service)}/healthz", process, self.config.startup_timeout)

    def _start_traefik(self) -> None:
        upstreams = default_upstreams(
            {name: self.config.service_ports[name] for name in self.config.services}
        )
        static_config, _ = render_traefik_config(
            self.var_dir / "traefik",
            self.config.ingress_port,
            upstreams,
            metrics_port=self.config.metrics_port,
        )
        self.traefik = TraefikProcess(
            static_config, self.config.ingress_port, self.log_dir / "traefik.log"
        )
        self.traefik.start()
        for service in self.config.services:
            prefix = ROUTE_PREFIXES.get(service, f"/{service}")
            self._wait(
                f"{self.ingress_url}{prefix}/openapi.json", self.processes[service], ROUTE_TIMEOUT
            )

    def _wait(self, url: str, process: ManagedProcess, timeout: float) -> None:
        """Wait for ``url`` to answer 200 while every started process stays alive."""
        try:
            wait_for_http(url, timeout, check=self.check)
        except TimeoutError as exc:
            message = f"{exc}\nlast lines of {process.log_path}:\n{process.tail()}"
            if self.traefik is not None:
                message += (
                    f"\nlast lines of {self.traefik.log_path}:\n{self.traefik.process.tail()}"
                )
            raise StackStartError(message) from exc
        except DevstackError as exc:
            raise StackStartError(str(exc)) from exc
