"""The whole local stack: services under uvicorn, Traefik in front, PostgreSQL/Redis optional."""

from __future__ import annotations

import functools
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from flightdeck_common.devstack.lifecycle import StartStop
from flightdeck_common.devstack.ports import LOOPBACK, port_in_use, wait_for_http
from flightdeck_common.devstack.postgres import PostgresServer
from flightdeck_common.devstack.processes import DevstackError, ManagedProcess
from flightdeck_common.devstack.redis import RedisServer
from flightdeck_common.devstack.traefik import (
    DEFAULT_INGRESS_PORT,
    DEFAULT_INTERNAL_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_SERVICE_PORTS,
    ROUTE_PREFIXES,
    TraefikProcess,
    render_traefik_config,
)

SERVICES: tuple[str, ...] = ("auth", "pipeline", "admin")
DEFAULT_POSTGRES_PORT = 54320
DEFAULT_REDIS_PORT = 63790
REPLICA_PORT_STEP = 10
"""Replica ``i`` of a service listens on its port + ``i * REPLICA_PORT_STEP`` unless
``StackConfig.replica_ports`` says otherwise (``make run-cluster``: 8101 and 8111 for auth)."""
SERVICE_STOP_TIMEOUT = 15.0
"""How long a stopping service may take after its drain (``StackConfig.drain_seconds``):
the server finishes in-flight requests within 10 s (``timeout_graceful_shutdown``)."""
ROUTE_TIMEOUT = 30.0  # Traefik's file provider may take a moment to load the routes
_SERVER_UP = re.compile(
    r'^traefik_service_server_up\{[^}]*url="(?P<url>[^"]+)"[^}]*\} (?P<value>\S+)$'
)


class StackStartError(DevstackError):
    """The stack could not start; the message carries the failing process's log tail."""


class PortInUseError(DevstackError):
    """A port the stack needs is already taken."""

    def __init__(self, port: int, purpose: str) -> None:
        self.port = port
        self.purpose = purpose
        super().__init__(f"port {port} ({purpose}) is already in use on {LOOPBACK}")


def full_mode_postgres(
    var_dir: Path, port: int = DEFAULT_POSTGRES_PORT, *, durable: bool = True
) -> PostgresServer:
    """The PostgreSQL of ``make run-full`` (also driven by the ``postgres`` subcommand)."""
    return PostgresServer(
        var_dir.absolute() / "postgres",
        port,
        [f"flightdeck_{service}" for service in SERVICES],
        durable=durable,
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
    internal_port: int = DEFAULT_INTERNAL_PORT
    """With ``replicas > 1``: Traefik's entry point for the services' calls to each other
    (internal APIs included, which the ingress port never routes)."""
    postgres_port: int = DEFAULT_POSTGRES_PORT
    redis_port: int = DEFAULT_REDIS_PORT
    startup_timeout: float = 60.0
    """How long each service may take to answer ``/healthz`` (migrations run at start)."""
    replicas: int = 1
    """uvicorn processes per service, all behind one load-balanced Traefik service. More
    than one shares state only through PostgreSQL and Redis: use it with ``full``."""
    replica_ports: dict[str, list[int]] = field(default_factory=dict)
    """Ports of replicas 1, 2, ... per service (replica 0 is on ``service_ports``); missing
    ones are the service's port + ``i * REPLICA_PORT_STEP``."""
    postgres_durable: bool = True
    """fsync on (``make run-full`` keeps data); tests turn it off for speed."""
    health_check_interval: str = "5s"
    """How often Traefik asks each server's ``/readyz`` (a Go duration)."""
    ingress_read_timeout: str = DEFAULT_READ_TIMEOUT
    """Time a client has to send a whole request through Traefik (a Go duration)."""
    drain_seconds: float = 0.0
    """After SIGTERM a service answers ``/readyz`` 503 this long, still serving, before it
    stops (``flightdeck_common.shutdown``). Longer than ``health_check_interval``, Traefik
    has taken a stopping replica out of the balancer before it refuses anything."""


class Stack(StartStop):
    """Start and stop the local stack as real processes (see ``StackConfig``).

    ``start()`` brings up PostgreSQL and Redis (``full``), the services concurrently (each
    waited for on ``/healthz``), then Traefik (``/ping``) and waits until every service
    answers ``<prefix>/openapi.json`` through it. Any failure stops everything and raises
    ``StackStartError`` with the failing log's tail. ``stop()`` goes in reverse order:
    Traefik, services, Redis, PostgreSQL. Logs: ``<var_dir>/logs/<name>.log``.

    With ``replicas > 1`` every service runs that many processes (``<service>-<i>``, logs
    ``<service>-<i>.log``) behind one Traefik service. Replica 0 of each service starts
    first (it migrates and, in development, bootstraps the admin and service accounts,
    which is not safe to do twice at once); the others start once it is healthy. The
    services then reach each other through Traefik's internal entry point
    (``internal_url``), so calls and relayed audit batches are balanced over the replicas
    as they would be through Kubernetes Services; the ingress never routes the internal
    APIs (``/auth/internal``, ``/admin/internal``).
    """

    def __init__(self, config: StackConfig) -> None:
        unknown = [name for name in config.services if name not in config.service_ports]
        if unknown:
            raise ValueError(f"no port configured for service(s) {unknown}")
        if config.replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {config.replicas}")
        for name, ports in config.replica_ports.items():
            if len(ports) < config.replicas - 1:
                raise ValueError(
                    f"replica_ports[{name!r}] has {len(ports)} port(s) for "
                    f"{config.replicas - 1} replica(s) after the first"
                )
        self.config = config
        self.var_dir = config.var_dir.absolute()
        self.log_dir = self.var_dir / "logs"
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.replicas: dict[str, list[ManagedProcess]] = {}
        """Every process of every service, replica 0 first."""
        self.traefik: TraefikProcess | None = None

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """Replica 0 of each started service."""
        return {service: replicas[0] for service, replicas in self.replicas.items() if replicas}

    # -- addresses --------------------------------------------------------------------

    @property
    def ingress_url(self) -> str:
        """``http://127.0.0.1:<ingress_port>``."""
        return f"http://{LOOPBACK}:{self.config.ingress_port}"

    @property
    def internal_url(self) -> str:
        """``http://127.0.0.1:<internal_port>``: every service path, internal APIs included,
        balanced over the replicas (only with ``replicas > 1``)."""
        return f"http://{LOOPBACK}:{self.config.internal_port}"

    def service_call_url(self, service: str) -> str:
        """Where the other services reach ``service`` (its ``AUTH_URL``/``ADMIN_URL``), and
        where tests call its internal APIs: its own port, or with several replicas
        ``internal_url``. Never the ingress, which does not route the internal APIs."""
        return self.internal_url if self.config.replicas > 1 else self.service_url(service)

    def service_url(self, service: str) -> str:
        """A service's own root URL (where ``/healthz``, ``/readyz``, ``/metrics`` live);
        replica 0's with several replicas."""
        return self.replica_url(service, 0)

    def replica_ports(self, service: str) -> list[int]:
        """The port of each replica of ``service``, replica 0 first."""
        base = self.config.service_ports[service]
        extra = self.config.replica_ports.get(service)
        return [
            base,
            *(
                extra[index - 1] if extra is not None else base + index * REPLICA_PORT_STEP
                for index in range(1, self.config.replicas)
            ),
        ]

    def replica_url(self, service: str, index: int) -> str:
        """Root URL of replica ``index`` of ``service``, bypassing the ingress."""
        ports = self.replica_ports(service)
        if not 0 <= index < len(ports):
            raise IndexError(f"{service} has {len(ports)} replica(s), no replica {index}")
        return f"http://{LOOPBACK}:{ports[index]}"

    def replica_name(self, service: str, index: int) -> str:
        """``auth`` with one replica, else ``auth-0``, ``auth-1``, ... (also the log name)."""
        return service if self.config.replicas == 1 else f"{service}-{index}"

    def log_path(self, service: str, index: int = 0) -> Path:
        """The log file of replica ``index`` of ``service``."""
        return self.log_dir / f"{self.replica_name(service, index)}.log"

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
        # Never the ingress (it does not route internal APIs). Several replicas: Traefik's
        # internal entry point, which balances and skips stopped ones.
        if "auth" in self.config.service_ports:
            env["AUTH_URL"] = self.service_call_url("auth")
        if "admin" in self.config.service_ports:
            env["ADMIN_URL"] = self.service_call_url("admin")
        env |= self._service_accounts
        return env

    @functools.cached_property
    def _service_accounts(self) -> dict[str, str]:
        """Client credentials for pipeline and admin, made fresh for each run: auth's
        development bootstrap (re-)keys the accounts from the same values at start."""
        accounts = {
            "pipeline": "flightdeck:auth-revocations flightdeck:admin-internal",
            "admin": "flightdeck:auth-revocations flightdeck:auth-users",
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
        processes = [process for replicas in self.replicas.values() for process in replicas]
        for process in processes:
            process.terminate()  # all at once; then wait for each
        for process in processes:
            attempt(functools.partial(process.stop, self._stop_timeout))
        if self.redis is not None:
            attempt(self.redis.stop)
        if self.postgres is not None:
            attempt(self.postgres.stop)
        if errors:
            raise DevstackError(f"stopping the stack failed: {errors}") from errors[0]

    def stop_service(self, service: str) -> None:
        """Stop one service (SIGTERM, graceful drain): Traefik keeps routing to the others.

        With several replicas this stops replica 0 (see :meth:`stop_replica`)."""
        self.stop_replica(service, 0)

    def start_service(self, service: str) -> None:
        """Start a stopped service again and wait until it answers ``/healthz`` and the
        ingress routes to it again (Traefik's health check takes it back in).

        With several replicas this starts replica 0 (see :meth:`start_replica`)."""
        self.start_replica(service, 0)

    def stop_replica(self, service: str, index: int) -> None:
        """Stop replica ``index`` of ``service`` (SIGTERM, graceful drain). Traefik's
        health check takes it out of the load balancer within one interval; with
        ``drain_seconds`` that happens before the process stops, which takes that long more.
        """
        self.replicas[service][index].stop(self._stop_timeout)
        if self.traefik is not None and self.config.replicas > 1:
            self._wait_in_balancer(service, index, up=False)

    def start_replica(self, service: str, index: int) -> None:
        """Start a stopped replica again; return once it answers ``/healthz`` and the
        ingress routes to it again (Traefik's health check took it back in)."""
        process = self.replicas[service][index]
        process.start()
        self._wait(
            f"{self.replica_url(service, index)}/healthz", process, self.config.startup_timeout
        )
        if self.traefik is None:
            return
        if self.config.replicas > 1:
            self._wait_in_balancer(service, index, up=True)
        prefix = ROUTE_PREFIXES.get(service, f"/{service}")
        self._wait(f"{self.ingress_url}{prefix}/openapi.json", process, ROUTE_TIMEOUT)

    def balancer_state(self) -> dict[str, bool]:
        """Whether Traefik's health check counts each server URL as up, from its
        ``traefik_service_server_up`` metric (empty before Traefik runs)."""
        if self.traefik is None:
            return {}
        url = f"http://{LOOPBACK}:{self.config.metrics_port}/metrics"
        text = httpx.get(url, timeout=5.0, trust_env=False).text
        state: dict[str, bool] = {}
        for line in text.splitlines():
            match = _SERVER_UP.match(line)
            if match is not None:
                state[match["url"]] = float(match["value"]) == 1.0
        return state

    def check(self) -> None:
        """Raise ``DevstackError`` (with the log tail) if a service or Traefik has died.

        PostgreSQL and Redis are not checked here: the services are built to survive
        their outages (readiness turns 503, requests get 503 problems) and recover by
        themselves, and ``make run-full`` is where people try exactly that.
        """
        for replicas in self.replicas.values():
            for process in replicas:
                if process.pid is not None:  # replicas after the first start later
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
        if config.replicas > 1:
            wanted.append((config.internal_port, "Traefik internal entry point"))
        wanted += [
            (port, self.replica_name(name, index))
            for name in config.services
            for index, port in enumerate(self.replica_ports(name))
        ]
        if config.full:
            wanted += [(config.postgres_port, "PostgreSQL"), (config.redis_port, "Redis")]
        for port, purpose in wanted:
            if port_in_use(port):
                raise PortInUseError(port, purpose)

    def _start_backing_services(self) -> None:
        self.postgres = full_mode_postgres(
            self.var_dir, self.config.postgres_port, durable=self.config.postgres_durable
        )
        self.postgres.start()
        self.redis = RedisServer(
            self.var_dir / "redis", self.config.redis_port, log_path=self.log_dir / "redis.log"
        )
        self.redis.start()

    def process_env(self) -> dict[str, str]:
        """The whole environment of a service process (and of a service's CLI run against
        this stack, e.g. ``flightdeck-auth create-admin``)."""
        env = {**os.environ}
        env.pop("REDIS_URL", None)  # embedded mode means in-process, unless extra_env says so
        return env | self.service_env() | self.config.extra_env

    def _start_services(self) -> None:
        env = self.process_env()
        for service in self.config.services:
            self.replicas[service] = [
                ManagedProcess(
                    self.replica_name(service, index),
                    self._uvicorn_argv(service, port),
                    env,
                    self.log_path(service, index),
                )
                for index, port in enumerate(self.replica_ports(service))
            ]  # registered before any starts: stop() must see them
        # Replica 0 of every service at once; each service's others once its replica 0
        # has migrated and bootstrapped (services still start concurrently with each other).
        for replicas in self.replicas.values():
            replicas[0].start()
        for service, replicas in self.replicas.items():
            self._wait(
                f"{self.service_url(service)}/healthz", replicas[0], self.config.startup_timeout
            )
            for process in replicas[1:]:
                process.start()
        for service, replicas in self.replicas.items():
            for index, process in enumerate(replicas[1:], start=1):
                self._wait(
                    f"{self.replica_url(service, index)}/healthz",
                    process,
                    self.config.startup_timeout,
                )

    @property
    def _stop_timeout(self) -> float:
        return self.config.drain_seconds + SERVICE_STOP_TIMEOUT

    def _uvicorn_argv(self, service: str, port: int) -> list[str]:
        """uvicorn under the draining server (``flightdeck_common.shutdown``), configured as
        ``flightdeck-<service> serve``: proxy headers from loopback, no access log, 10 s
        graceful shutdown."""
        return [
            sys.executable, "-m", "flightdeck_common.shutdown",
            self.config.app_module_template.format(service=service),
            "--host", LOOPBACK, "--port", str(port),
            "--forwarded-allow-ips", LOOPBACK,
            "--drain-seconds", f"{self.config.drain_seconds:g}",
        ]  # fmt: skip

    def _wait_in_balancer(self, service: str, index: int, *, up: bool) -> None:
        """Wait until Traefik's health check has (un)marked this replica's server."""
        url = self.replica_url(service, index)
        deadline = time.monotonic() + ROUTE_TIMEOUT
        while self.balancer_state().get(url) is not up:
            if time.monotonic() > deadline:
                raise StackStartError(
                    f"Traefik did not mark {url} ({service} replica {index}) "
                    f"{'up' if up else 'down'} within {ROUTE_TIMEOUT:g}s"
                )
            time.sleep(0.2)

    def _start_traefik(self) -> None:
        upstreams = {
            name: [self.replica_url(name, index) for index in range(self.config.replicas)]
            for name in self.config.services
        }
        static_config, _ = render_traefik_config(
            self.var_dir / "traefik",
            self.config.ingress_port,
            upstreams,
            metrics_port=self.config.metrics_port,
            health_check_interval=self.config.health_check_interval,
            read_timeout=self.config.ingress_read_timeout,
            internal_port=self.config.internal_port if self.config.replicas > 1 else None,
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
        if self.config.replicas > 1:  # every replica in the balancer, not just one of them
            for service in self.config.services:
                for index in range(self.config.replicas):
                    self._wait_in_balancer(service, index, up=True)

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
