"""Tests of the local dev stack helpers against the real binaries (PostgreSQL, Redis, Traefik)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from flightdeck_common.devstack import (
    DevstackError,
    ManagedProcess,
    PostgresServer,
    ProcessExitedError,
    RedisServer,
    Stack,
    StackConfig,
    StackStartError,
    TraefikProcess,
    free_port,
    port_in_use,
    render_traefik_config,
    wait_for_http,
)
from flightdeck_common.devstack.postgres import find_pg_bindir
from flightdeck_common.devstack.redis import redis_ping
from flightdeck_common.devstack.traefik import COMMITTED_CONFIG_DIR
from flightdeck_common.testing.plugin import have_traefik, needs_traefik

REPO_ROOT = Path(__file__).resolve().parents[4]


def _have_postgres() -> bool:
    try:
        find_pg_bindir()
    except FileNotFoundError:
        return False
    return True


needs_postgres = pytest.mark.skipif(not _have_postgres(), reason="PostgreSQL binaries missing")
needs_redis = pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server missing")

# A stdlib HTTP upstream: echoes what it received as JSON; /readyz answers 503 while
# the file "<name>.down" exists next to the script. A POST ``?batch=B&hold=N`` is held until
# N requests of batch B have arrived (at most 30 s), then answered 202 with how many had.
UPSTREAM_SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, threading, urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    NAME, PORT = sys.argv[1], int(sys.argv[2])
    DOWN = pathlib.Path(__file__).with_name(NAME + ".down")
    ARRIVED = {}
    ARRIVAL = threading.Condition()

    class Server(ThreadingHTTPServer):
        request_queue_size = 2048
        daemon_threads = True

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            batch, hold = query["batch"][0], int(query["hold"][0])
            with ARRIVAL:
                ARRIVED[batch] = ARRIVED.get(batch, 0) + 1
                ARRIVAL.notify_all()
                ARRIVAL.wait_for(lambda: ARRIVED[batch] >= hold, timeout=30)
                seen = ARRIVED[batch]
            body = json.dumps({"seen": seen}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            status = 503 if self.path == "/readyz" and DOWN.exists() else 200
            body = json.dumps(
                {"name": NAME, "path": self.path, "headers": dict(self.headers.items())}
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    Server(("127.0.0.1", PORT), Handler).serve_forever()
    """
)

# A pure ASGI app factory per service for the Stack (uvicorn --factory), no framework.
STUB_APP = textwrap.dedent(
    """
    import json, os

    def _factory(service):
        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            body = json.dumps({
                "service": service,
                "path": scope["path"],
                "client": scope["client"][0],
                "database_url": os.environ.get(f"FLIGHTDECK_{service.upper()}_DATABASE_URL"),
                "redis_url": os.environ.get("REDIS_URL"),
            }).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
        return app

    def create_auth():
        return _factory("auth")

    def create_pipeline():
        return _factory("pipeline")
    """
)


def _dead(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie (killed, waiting for its new parent to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


# -- ports and processes ----------------------------------------------------------------


def test_wait_for_http_times_out_with_last_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"

    with pytest.raises(TimeoutError, match="ConnectError"):
        wait_for_http(url, timeout=0.3)


def test_managed_process_stop_kills_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", (
            "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
        )])
        print("parent ready", flush=True)
        time.sleep(60)
        """
    )
    process = ManagedProcess(
        "group", [sys.executable, "-c", script], None, tmp_path / "group.log"
    ).start()
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, process.tail()
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())

    process.stop(timeout=1)

    assert not process.is_running
    assert _dead(child_pid), "the SIGTERM-ignoring grandchild survived stop()"
    assert "parent ready" in process.tail()


def test_managed_process_reports_exit_with_log_tail(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('about to fail'); raise SystemExit(3)"]
    process = ManagedProcess("failing", argv, None, tmp_path / "failing.log").start()
    deadline = time.monotonic() + 10
    while process.is_running:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    with pytest.raises(ProcessExitedError) as caught:
        process.ensure_running()

    assert caught.value.returncode == 3
    assert "about to fail" in str(caught.value)


# -- PostgreSQL and Redis ---------------------------------------------------------------


@needs_postgres
def test_postgres_start_query_stop_restart_keeps_data(tmp_path: Path) -> None:
    port = free_port()
    server = PostgresServer(tmp_path / "pg" / "data", port, ["flightdeck_auth", "flightdeck_admin"])

    with server:
        assert server.url("flightdeck_auth") == (
            f"postgresql+asyncpg://flightdeck:flightdeck@127.0.0.1:{port}/flightdeck_auth"
        )
        server.psql(
            "CREATE TABLE runs (id int); INSERT INTO runs VALUES (42)",
            "flightdeck_auth",
            user="flightdeck",
        )
        databases = server.psql("SELECT datname FROM pg_database ORDER BY 1").split()
        assert {"flightdeck_auth", "flightdeck_admin"} <= set(databases)

        server.stop()
        assert not server.is_running()
        assert not port_in_use(port)

        server.start()  # same instance, existing data dir: no initdb, role/dbs already there
        assert server.psql("SELECT id FROM runs", "flightdeck_auth", user="flightdeck") == "42"
        owner = server.psql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'flightdeck_admin'"
        )
        assert owner == "flightdeck"

    assert not server.is_running()


@needs_redis
def test_redis_start_ping_stop_restart(tmp_path: Path) -> None:
    port = free_port()
    server = RedisServer(tmp_path / "redis", port)

    with server:
        assert server.url == f"redis://127.0.0.1:{port}/0"
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(16) == b"+PONG\r\n"
        server.stop()
        assert not redis_ping(port)
        server.start()
        assert redis_ping(port)

    assert not server.is_running
    assert not port_in_use(port)


# -- Traefik ----------------------------------------------------------------------------


def test_committed_traefik_config_is_the_rendered_default(tmp_path: Path) -> None:
    static, dynamic = render_traefik_config(
        tmp_path, dynamic_config_ref=str(COMMITTED_CONFIG_DIR / "dynamic.yml")
    )

    committed = REPO_ROOT / COMMITTED_CONFIG_DIR
    hint = "regenerate with: python -m flightdeck_common.devstack render-traefik"
    assert (committed / "traefik.yml").read_text() == static.read_text(), hint
    assert (committed / "dynamic.yml").read_text() == dynamic.read_text(), hint


@dataclass
class Ingress:
    url: str
    metrics_url: str
    upstream_dir: Path
    traefik: TraefikProcess


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingress]:
    """Traefik on free ports in front of two stdlib upstreams named auth and pipeline."""
    if not have_traefik():
        pytest.skip("traefik binary missing")
    base = tmp_path_factory.mktemp("ingress")
    script = base / "upstream.py"
    script.write_text(UPSTREAM_SCRIPT)
    ports = {"auth": free_port(), "pipeline": free_port()}
    upstreams = [
        ManagedProcess(
            name, [sys.executable, str(script), name, str(port)], None, base / f"{name}.log"
        ).start()
        for name, port in ports.items()
    ]
    entry_port, metrics_port = free_port(), free_port()
    static, _ = render_traefik_config(
        base / "traefik",
        entry_port,
        {name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
        metrics_port=metrics_port,
        health_check_interval="1s",  # the committed config uses 5s; same feature, faster
    )
    traefik = TraefikProcess(static, entry_port, base / "traefik.log")
    try:
        for process, port in zip(upstreams, ports.values(), strict=True):
            wait_for_http(f"http://127.0.0.1:{port}/healthz", 10, check=process.ensure_running)
        traefik.start()
        yield Ingress(
            url=f"http://127.0.0.1:{entry_port}",
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            upstream_dir=base,
            traefik=traefik,
        )
    finally:
        traefik.stop()
        for process in upstreams:
            process.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as http:
        yield http


def _wait_for_route(http: httpx.Client, url: str, status: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (got := http.get(url).status_code) != status:
        assert time.monotonic() < deadline, f"{url}: still {got}, expected {status}"
        time.sleep(0.1)


@needs_traefik
def test_traefik_ping(ingress: Ingress, client: httpx.Client) -> None:
    response = client.get(f"{ingress.url}/ping")

    assert response.status_code == 200
    assert response.text == "OK"


@needs_traefik
def test_traefik_routes_by_prefix_with_forwarded_headers(
    ingress: Ingress, client: httpx.Client
) -> None:
    _wait_for_route(client, f"{ingress.url}/auth/x", 200)

    auth = client.get(
        f"{ingress.url}/auth/x?q=1",
        headers={"X-Forwarded-For": "203.0.113.9", "X_Forwarded_For": "203.0.113.10"},
    ).json()
    pipeline = client.get(f"{ingress.url}/pipelines").json()

    assert auth["name"] == "auth"
    assert auth["path"] == "/auth/x?q=1"  # no prefix stripping
    headers = auth["headers"]
    assert headers["X-Forwarded-For"] == "127.0.0.1"  # the client's value is not trusted
    assert "X_Forwarded_For" not in headers  # aliasing header names are dropped
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == ingress.url.removeprefix("http://")
    assert headers["Host"] == ingress.url.removeprefix("http://")  # passHostHeader
    assert pipeline["name"] == "pipeline"
    assert pipeline["path"] == "/pipelines"


@needs_traefik
@pytest.mark.parametrize(
    "path",
    ["/metrics", "/healthz", "/readyz", "/authx", "/", "/admin/x", "/api/rawdata", "/dashboard/"],
)
def test_traefik_does_not_route_other_paths(
    ingress: Ingress, client: httpx.Client, path: str
) -> None:
    assert client.get(f"{ingress.url}{path}").status_code == 404


@needs_traefik
@pytest.mark.parametrize(
    "path",
    [
        "/auth/internal",
        "/auth/internal/",
        "/auth/internal/users",
        "/auth/internal/users?limit=1",
        "/auth/%69nternal/users",  # percent-encoded letters are decoded before matching
        "/auth/x/../internal/users",  # dot segments are resolved before matching
        "/pipelines/internal/anything",
    ],
)
def test_traefik_never_routes_internal_apis(
    ingress: Ingress, client: httpx.Client, path: str
) -> None:
    _wait_for_route(client, f"{ingress.url}/auth/x", 200)
    for method in ("GET", "POST", "PATCH", "DELETE"):
        response = client.request(method, f"{ingress.url}{path}")
        assert response.status_code in (400, 404), (method, path, response.text)
        assert "name" not in response.text  # never an upstream's answer


@needs_traefik
def test_traefik_routes_paths_that_only_start_like_internal(
    ingress: Ingress, client: httpx.Client
) -> None:
    _wait_for_route(client, f"{ingress.url}/auth/x", 200)
    assert client.get(f"{ingress.url}/auth/internals").json()["path"] == "/auth/internals"


@needs_traefik
@pytest.mark.parametrize(
    "path",
    [
        "/auth/a%2Fb",
        "/auth/a%5Cb",
        "/auth/a%00b",
        "/auth/a%3Bb",
        "/auth/a%25b",
        "/auth/a%3Fb",
        "/auth/a%23b",
        # What the schema fuzzer sent as run ids (an encoded backslash, an encoded "?"): the
        # ingress refuses them with a bare 400, so no service ever sees them.
        "/pipelines/%F1%BC%82%93%C2%ACI%5C%3E%C3%AC%F0%AA%BA%99%60%C3%A7%C2%AA",
        "/pipelines/%F2%90%A5%81%C3%B0%F1%8C%97%80%3F%F1%A3%A9%86%F0%A3%A9%8F%C3%96",
    ],
)
def test_traefik_rejects_ambiguous_encoded_characters(
    ingress: Ingress, client: httpx.Client, path: str
) -> None:
    response = client.get(f"{ingress.url}{path}")
    assert response.status_code == 400
    assert "x-request-id" not in response.headers  # Traefik's answer, not an upstream's


@needs_traefik
def test_traefik_prometheus_metrics_on_their_own_entrypoint(
    ingress: Ingress, client: httpx.Client
) -> None:
    _wait_for_route(client, f"{ingress.url}/auth/x", 200)

    metrics = client.get(ingress.metrics_url)

    assert metrics.status_code == 200
    assert 'traefik_router_requests_total{code="200"' in metrics.text
    assert client.get(ingress.metrics_url.replace("/metrics", "/auth/x")).status_code == 404


@needs_traefik
def test_traefik_health_check_takes_unready_upstream_out(
    ingress: Ingress, client: httpx.Client
) -> None:
    down_flag = ingress.upstream_dir / "pipeline.down"
    down_flag.touch()
    try:
        _wait_for_route(client, f"{ingress.url}/pipelines/x", 503)
        assert client.get(f"{ingress.url}/auth/x").status_code == 200
    finally:
        down_flag.unlink()
    _wait_for_route(client, f"{ingress.url}/pipelines/x", 200)


@needs_traefik
def test_traefik_forwards_a_thousand_concurrent_webhook_deliveries(
    ingress: Ingress, client: httpx.Client
) -> None:
    """The webhook route's in-flight limit is a backstop, not a shed point: 1,000 deliveries
    at once to one pipeline replica all reach it (each is held upstream until all 1,000 are
    there, so they are in flight together) and none gets Traefik's 429."""
    _wait_for_route(client, f"{ingress.url}/pipelines/x", 200)
    deliveries = 1000
    batch = secrets.token_hex(4)
    url = f"{ingress.url}/pipelines/webhooks/github?batch={batch}&hold={deliveries}"

    async def deliver_all() -> list[tuple[int, int]]:
        limits = httpx.Limits(max_connections=deliveries, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as http:

            async def deliver() -> tuple[int, int]:
                response = await http.post(url, content=b'{"zen": "hold"}')
                seen = response.json()["seen"] if response.status_code == 202 else 0
                return response.status_code, seen

            return await asyncio.gather(*(deliver() for _ in range(deliveries)))

    answers = asyncio.run(deliver_all())

    assert Counter(status for status, _ in answers) == {202: deliveries}
    assert min(seen for _, seen in answers) == deliveries


@needs_traefik
def test_traefik_log_has_no_errors(ingress: Ingress, client: httpx.Client) -> None:
    client.get(f"{ingress.url}/auth/logged")
    deadline = time.monotonic() + 5
    while True:  # the access log is written after the response
        lines = [json.loads(line) for line in ingress.traefik.process.run_output().splitlines()]
        if any(line.get("RequestPath") == "/auth/logged" for line in lines) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.05)

    assert [line for line in lines if line.get("level") in {"error", "fatal"}] == []
    assert any(line.get("RequestPath") == "/auth/logged" for line in lines)  # JSON access log


# -- the stack --------------------------------------------------------------------------


def _stub_config(tmp_path: Path, template: str, services: list[str]) -> StackConfig:
    apps = tmp_path / "apps"
    apps.mkdir(exist_ok=True)
    (apps / "stubapp.py").write_text(STUB_APP)
    (apps / "brokenapp.py").write_text("raise RuntimeError('boom at import')\n")
    return StackConfig(
        var_dir=tmp_path / "var",
        ingress_port=free_port(),
        metrics_port=free_port(),
        service_ports={name: free_port() for name in services},
        services=services,
        app_module_template=template,
        extra_env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(apps), os.environ.get("PYTHONPATH")]))
        },
    )


@needs_traefik
def test_stack_runs_services_behind_traefik_and_stops_cleanly(tmp_path: Path) -> None:
    config = _stub_config(tmp_path, "stubapp:create_{service}", ["auth", "pipeline"])
    stack = Stack(config)

    with stack, httpx.Client(timeout=5, trust_env=False) as client:
        auth = client.get(f"{stack.ingress_url}/auth/openapi.json").json()
        pipeline = client.get(f"{stack.ingress_url}/pipelines/openapi.json").json()
        direct = client.get(f"{stack.service_url('auth')}/healthz")
        pids = [process.pid for process in stack.processes.values()]

    assert auth["service"] == "auth"
    assert auth["client"] == "127.0.0.1"
    assert auth["database_url"] == f"sqlite+aiosqlite:///{config.var_dir.absolute()}/auth.db"
    assert auth["redis_url"] is None
    assert pipeline["service"] == "pipeline"
    assert direct.status_code == 200
    assert all(pid is not None and _dead(pid) for pid in pids)
    used = [config.ingress_port, config.metrics_port, *config.service_ports.values()]
    assert not any(port_in_use(port) for port in used)
    assert (config.var_dir / "logs" / "traefik.log").exists()


def test_stack_start_failure_reports_the_log_and_stops(tmp_path: Path) -> None:
    config = _stub_config(tmp_path, "brokenapp:create_app", ["auth"])
    stack = Stack(config)

    with pytest.raises(StackStartError, match="boom at import"):
        stack.start()

    assert stack.traefik is None
    assert not stack.processes["auth"].is_running


def test_cli_names_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "flightdeck_common.devstack", "run",
             "--var-dir", str(tmp_path / "var"), "--ingress-port", str(port)],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    assert result.returncode == 2
    assert f"port {port} (ingress) is already in use" in result.stderr


def test_devstack_error_is_a_runtime_error() -> None:
    assert issubclass(StackStartError, DevstackError)
    assert issubclass(DevstackError, RuntimeError)
