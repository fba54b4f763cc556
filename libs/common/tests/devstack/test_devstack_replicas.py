"""Several replicas per service in the dev stack: addresses, Traefik config, start order,
a stopped replica taken out of the balancer and back in (stub apps, no Flightdeck)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml

from flightdeck_common.devstack import ManagedProcess, Stack, StackConfig, free_port, port_in_use
from flightdeck_common.devstack.stack import REPLICA_PORT_STEP
from flightdeck_common.devstack.traefik import WEBHOOK_IN_FLIGHT_PER_REPLICA, render_dynamic_config
from flightdeck_common.testing.plugin import needs_traefik

# A pure ASGI app per service that says which port (replica) answered.
STUB_APP = textwrap.dedent(
    """
    import json

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = json.dumps({"port": scope["server"][1], "path": scope["path"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def create_auth():
        return app
    """
)


def _config(tmp_path: Path, replicas: int, **overrides: object) -> StackConfig:
    config = StackConfig(var_dir=tmp_path / "var", replicas=replicas)
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def test_one_replica_keeps_the_single_server_config() -> None:
    url = "http://127.0.0.1:8101"
    assert render_dynamic_config({"auth": url}) == render_dynamic_config({"auth": [url]})


def test_replicas_are_servers_of_one_load_balanced_service() -> None:
    rendered = render_dynamic_config(
        {"auth": ["http://127.0.0.1:8101", "http://127.0.0.1:8111"]}, health_check_interval="1s"
    )
    servers = rendered.split("servers:\n", 1)[1].split("\n  serversTransports", 1)[0]
    assert servers.split() == [
        "-", "url:", '"http://127.0.0.1:8101"', "-", "url:", '"http://127.0.0.1:8111"'
    ]  # fmt: skip
    assert "path: /readyz" in rendered
    assert "interval: 1s" in rendered
    with pytest.raises(ValueError, match="no upstream URL"):
        render_dynamic_config({"auth": []})


def test_webhook_in_flight_limit_is_a_backstop_per_replica() -> None:
    """The ingress forwards up to 2048 webhook deliveries per pipeline replica at once: far
    above normal bursts (1,000 at once per replica must all be accepted), since GitHub never
    redelivers a refused delivery; the pipeline's backlog bound is what refuses."""
    assert WEBHOOK_IN_FLIGHT_PER_REPLICA == 2048
    for replicas in (1, 3):
        urls = [f"http://127.0.0.1:{8102 + 10 * i}" for i in range(replicas)]
        http = yaml.safe_load(render_dynamic_config({"pipeline": urls}))["http"]

        assert http["routers"]["pipeline-webhooks"]["middlewares"] == [
            "pipeline-webhooks-in-flight"
        ]
        in_flight = http["middlewares"]["pipeline-webhooks-in-flight"]["inFlightReq"]
        assert in_flight == {"amount": 2048 * replicas, "sourceCriterion": {"requestHost": True}}


def test_replica_addresses_names_and_logs(tmp_path: Path) -> None:
    single = Stack(_config(tmp_path, 1))
    assert single.replica_ports("auth") == [8101]
    assert single.replica_name("auth", 0) == "auth"
    assert single.log_path("auth") == single.log_dir / "auth.log"

    cluster = Stack(_config(tmp_path, 3, replica_ports={"pipeline": [9001, 9002]}))
    assert cluster.replica_ports("auth") == [8101, 8101 + REPLICA_PORT_STEP, 8121]
    assert cluster.replica_ports("pipeline") == [8102, 9001, 9002]
    assert cluster.service_url("admin") == cluster.replica_url("admin", 0)
    assert cluster.replica_url("admin", 2) == "http://127.0.0.1:8123"
    assert cluster.log_path("admin", 1) == cluster.log_dir / "admin-1.log"
    with pytest.raises(IndexError):
        cluster.replica_url("auth", 3)


def test_replicas_call_each_other_through_the_internal_entry_point(tmp_path: Path) -> None:
    """Never through the ingress, which does not route the internal APIs."""
    single = Stack(_config(tmp_path, 1)).service_env()
    assert (single["AUTH_URL"], single["ADMIN_URL"]) == (
        "http://127.0.0.1:8101",
        "http://127.0.0.1:8103",
    )
    cluster = Stack(_config(tmp_path, 2)).service_env()
    assert cluster["AUTH_URL"] == cluster["ADMIN_URL"] == "http://127.0.0.1:8081"


@pytest.mark.parametrize(
    ("replicas", "replica_ports", "message"),
    [(0, {}, "at least 1"), (3, {"auth": [9001]}, "1 port\\(s\\) for 2")],
)
def test_bad_replica_settings_are_refused(
    tmp_path: Path, replicas: int, replica_ports: dict[str, list[int]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Stack(_config(tmp_path, replicas, replica_ports=replica_ports))


def test_cli_refuses_replicas_without_full_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flightdeck_common.devstack", "run", "--replicas", "2",
         "--var-dir", str(tmp_path / "var")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--replicas above 1 needs --full" in result.stderr


def test_run_output_is_only_the_current_run(tmp_path: Path) -> None:
    """What the CLI reads to decide whether auth just created the bootstrap admin."""
    log = tmp_path / "echo.log"
    for word in ("first", "second"):
        process = ManagedProcess("echo", ["echo", word], None, log).start()
        deadline = time.monotonic() + 10
        while process.returncode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.returncode == 0
        assert process.run_output() == f"{word}\n"
    assert log.read_text() == "first\nsecond\n"


@needs_traefik
def test_a_stopped_replica_leaves_the_balancer_and_comes_back(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "stubapp.py").write_text(STUB_APP)
    ports = [free_port(), free_port()]
    config = StackConfig(
        var_dir=tmp_path / "var",
        ingress_port=free_port(),
        metrics_port=free_port(),
        internal_port=free_port(),
        service_ports={"auth": ports[0]},
        replica_ports={"auth": ports[1:]},
        services=["auth"],
        replicas=2,
        app_module_template="stubapp:create_{service}",
        health_check_interval="1s",
        extra_env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(apps), os.environ.get("PYTHONPATH")]))
        },
    )

    def answering(http: httpx.Client, requests: int = 12) -> set[int]:
        return {http.get("/auth/x").json()["port"] for _ in range(requests)}

    stack = Stack(config)
    with stack, httpx.Client(base_url=stack.ingress_url, timeout=5, trust_env=False) as http:
        assert answering(http) == set(ports)
        assert stack.balancer_state() == {f"http://127.0.0.1:{port}": True for port in ports}
        # Internal APIs: 404 at the ingress, balanced over the replicas on the internal port.
        assert http.get("/auth/internal/users").status_code == 404
        with httpx.Client(base_url=stack.internal_url, timeout=5, trust_env=False) as internal:
            seen = {internal.get("/auth/internal/users").json()["port"] for _ in range(12)}
        assert seen == set(ports)

        stack.stop_replica("auth", 1)
        assert answering(http) == {ports[0]}  # no 502s: it is out of the balancer

        stack.start_replica("auth", 1)
        assert answering(http) == set(ports)
        pids = [process.pid for process in stack.replicas["auth"]]
        logs = [stack.log_path("auth", index) for index in range(2)]

    assert [log.name for log in logs] == ["auth-0.log", "auth-1.log"]
    assert all(log.exists() for log in logs)
    assert all(pid is not None and not Path(f"/proc/{pid}").exists() for pid in pids)
    assert not any(port_in_use(port) for port in [*ports, config.ingress_port])


def test_replicas_run_under_the_draining_server(tmp_path: Path) -> None:
    stack = Stack(_config(tmp_path, 2, drain_seconds=2.5))
    argv = stack._uvicorn_argv("auth", 8101)
    assert argv[1:4] == ["-m", "flightdeck_common.shutdown", "flightdeck_auth.app:create_app"]
    assert argv[argv.index("--drain-seconds") + 1] == "2.5"
    assert argv[argv.index("--port") + 1] == "8101"


def test_the_cluster_command_drains_longer_than_the_health_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flightdeck_common.devstack import __main__ as cli

    seen: list[StackConfig] = []

    def fake_run(config: StackConfig) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(cli, "run", fake_run)
    var = ["--var-dir", str(tmp_path)]
    assert cli.main(["run", "--full", "--replicas", "2", *var]) == 0
    assert cli.main(["run", *var]) == 0
    assert cli.main(["run", "--full", "--replicas", "2", "--drain-seconds", "1", *var]) == 0
    interval = seen[0].health_check_interval
    assert interval.endswith("s")
    assert seen[0].drain_seconds == cli.CLUSTER_DRAIN_SECONDS > float(interval[:-1])
    assert seen[1].drain_seconds == 0.0
    assert seen[2].drain_seconds == 1.0
