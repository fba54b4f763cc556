"""monitoring/: Prometheus configuration and alert rules, Grafana provisioning and dashboards.

promtool checks the configuration and the rules and runs the rules' unit tests (promtool is
required: Debian's `prometheus` package). Independently, every PromQL expression of the rules
and dashboards is parsed with promql_parser, and the metric names, label names, routes and
jobs it uses are checked against what the real services and Traefik export once the whole
stack runs and has served a few requests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.devstack.traefik import DEFAULT_METRICS_PORT, DEFAULT_SERVICE_PORTS
from flightdeck_common.testing.stack_users import create_user

REPO = Path(__file__).resolve().parents[4]
PROMETHEUS_DIR = REPO / "monitoring" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
GRAFANA_DIR = REPO / "monitoring" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
WORKFLOW_RUN_FIXTURE = (
    REPO / "services/pipeline/tests/fixtures/github/workflow_run/completed.payload.json"
)

SERVICES = ("auth", "pipeline", "admin")
JOBS = {"prometheus", "traefik", *SERVICES}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Series Prometheus makes itself (not scraped from a target).
BUILTIN_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Metrics the driven scenario cannot give a sample: their label names are not checked.
NO_SAMPLE_EXPECTED = {
    "flightdeck_outbox_rejected_total",  # the audit log refusing events
    "flightdeck_webhook_mapping_retries_total",  # a mapping attempt rolled back (per reason)
}
# How long the scenario waits for the pipeline's worker to map the delivery it sent.
MAPPING_WAIT_SECONDS = 10.0
# What Grafana substitutes before the query reaches Prometheus.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


# --- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    where: str
    promql: str


def rule_expressions() -> list[Expression]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                found.append(Expression(f"{path.name}: {name}", rule["expr"]))
    return found


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def grafana_variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each templating variable -> the value it takes with "All" selected."""
    values = dict(GRAFANA_BUILTINS)
    for variable in dashboard.get("templating", {}).get("list", []):
        assert variable["type"] == "custom", "only custom variables: their values are known here"
        options = [o.strip() for o in variable["query"].split(",")]
        values[variable["name"]] = variable.get("allValue") or "|".join(options)
    return values


def substitute(expr: str, variables: dict[str, str], where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"{where}: unknown dashboard variable ${name}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dashboard_expressions() -> list[Expression]:
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = grafana_variables(dashboard)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                where = f"{path.name}: {panel['title']} [{target['refId']}]"
                found.append(Expression(where, substitute(target["expr"], variables, where)))
    return found


ALL_EXPRESSIONS = rule_expressions() + dashboard_expressions()


@dataclass
class Usage:
    """What one expression asks of the scraped data."""

    metrics: set[str] = field(default_factory=set)
    # (metric, label) for every label matcher.
    matched_labels: set[tuple[str, str]] = field(default_factory=set)
    # (metrics inside the aggregation, label) for every `by (...)` label.
    grouping_labels: list[tuple[frozenset[str], str]] = field(default_factory=list)
    # (label, operator, value) of every matcher.
    matchers: list[tuple[str, str, str]] = field(default_factory=list)


# MatchOp is not hashable: keyed by its name (str(op) is "MatchOp.Equal").
OPERATORS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def _selector_name(node: Any) -> str | None:
    if node.name:
        return str(node.name)
    for matcher in node.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return str(matcher.value)
    return None


def _metrics_under(node: Any) -> set[str]:
    names: set[str] = set()

    def visit(child: Any) -> None:
        if isinstance(child, promql_parser.VectorSelector):
            name = _selector_name(child)
            if name:
                names.add(name)

    promql_parser.walk(node, visit)
    return names


def usage(expression: Expression) -> Usage:
    try:
        tree = promql_parser.parse(expression.promql)
    except Exception as exc:
        pytest.fail(f"{expression.where}: {expression.promql!r} does not parse: {exc}")
    found = Usage()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = _selector_name(node)
            assert name, f"{expression.where}: a selector without a metric name"
            found.metrics.add(name)
            for matcher in node.matchers.matchers:
                if matcher.name != "__name__":
                    found.matched_labels.add((name, matcher.name))
                    found.matchers.append(
                        (matcher.name, OPERATORS[str(matcher.op).rsplit(".", 1)[-1]], matcher.value)
                    )
        elif (
            isinstance(node, promql_parser.AggregateExpr)
            and node.modifier is not None
            and node.modifier.type == promql_parser.AggModifierType.By
        ):
            inner = frozenset(_metrics_under(node.expr))
            for label in node.modifier.labels:
                found.grouping_labels.append((inner, label))

    promql_parser.walk(tree, visit)
    return found


def alternatives(value: str) -> list[str]:
    """The literal alternatives of a regex matcher such as ``auth|pipeline``."""
    return value.split("|")


# --- promtool ----------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is missing: `apt-get install --no-install-recommends prometheus` "
            "(.ci/run installs it)"
        )
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    # check config also checks the rule files it names: make sure it found ours.
    for path in RULE_FILES:
        assert path.name in result.stdout + result.stderr


def test_alert_rules_are_valid() -> None:
    assert RULE_FILES
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    assert RULE_TESTS
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


# --- structure ---------------------------------------------------------------------------------


def test_prometheus_scrapes_the_services_traefik_and_itself() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "prometheus": ["localhost:9090"],
        "traefik": [f"traefik:{DEFAULT_METRICS_PORT}"],
        **{s: [f"{s}:{port}"] for s, port in DEFAULT_SERVICE_PORTS.items()},
    }
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["rules/*.yml"]


def test_compose_serves_the_monitoring_files() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert "./monitoring/prometheus:/etc/prometheus:ro" in compose["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["prometheus"]["command"]
    grafana = compose["grafana"]
    assert "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./monitoring/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana["volumes"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA_DIR / "dashboards" / Path(home).name).is_file()
    for name in ("prometheus", "grafana"):
        ports = compose[name]["ports"]
        assert all(p.startswith("127.0.0.1:") for p in ports), f"{name} must stay on loopback"


def test_every_rule_alerts_with_a_duration_severity_and_annotations() -> None:
    names = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert")
                assert name, f"{path.name}: recording rules belong elsewhere"
                names.append(name)
                assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: for"
                assert rule["labels"]["severity"] in {"warning", "critical"}, name
                assert rule["annotations"]["summary"].strip(), name
                assert rule["annotations"]["description"].strip(), name
    assert len(names) == len(set(names)), "alert names must be unique"


def test_the_issue_s_alerts_exist() -> None:
    alerting: dict[str, set[str]] = {}
    for expression in rule_expressions():
        alerting[expression.where.split(": ", 1)[1]] = usage(expression).metrics
    wanted = {
        "service down": "up",
        "5xx ratio": "http_requests_total",
        "p99 latency": "http_request_duration_seconds_bucket",
        "webhook signature failures": "flightdeck_webhook_signature_failures_total",
        "outbox backlog": "flightdeck_outbox_pending",
        "outbox age": "flightdeck_outbox_oldest_pending_seconds",
        "database not ready": "flightdeck_readiness_check_up",
        "webhook backlog": "flightdeck_webhook_backlog",
        "webhook backlog near its limit": "flightdeck_webhook_backlog_limit",
        "oldest pending webhook delivery": "flightdeck_webhook_oldest_pending_age_seconds",
        "webhook deliveries refused": "flightdeck_webhook_backlog_refusals_total",
        "webhook mapping failures": "flightdeck_webhook_mapped_total",
    }
    for purpose, metric in wanted.items():
        assert any(metric in used for used in alerting.values()), f"no alert for {purpose}"
    assert "FlightdeckLoginFailureSpike" in alerting


def test_grafana_provisioning_points_at_the_compose_prometheus_and_dashboards() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "prometheus", "http://prometheus:9090")
    ]
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "flightdeck.yml").read_text()
    )["providers"]
    assert [p["options"]["path"] for p in providers] == ["/etc/grafana/dashboards"]


def test_dashboards_cover_overview_pipelines_security_and_runtime() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert uids == {
        "flightdeck-overview",
        "flightdeck-pipelines",
        "flightdeck-security",
        "flightdeck-runtime",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["title"].startswith("Flightdeck / ")
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queries = 0
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] in ("row", "text"):
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"
            queries += 1
    assert queries >= 8


@pytest.mark.parametrize("expression", ALL_EXPRESSIONS, ids=lambda e: e.where)
def test_expression_parses_and_names_its_metrics(expression: Expression) -> None:
    assert usage(expression).metrics


@pytest.mark.parametrize("expression", ALL_EXPRESSIONS, ids=lambda e: e.where)
def test_expression_selects_jobs_that_prometheus_scrapes(expression: Expression) -> None:
    for label, op, value in usage(expression).matchers:
        if label == "job" and op in ("=", "=~"):
            unknown = set(alternatives(value)) - JOBS
            assert not unknown, f"{expression.where}: no scrape job {sorted(unknown)}"


# --- against the running stack -----------------------------------------------------------------


@dataclass
class Scraped:
    """What the stack's targets export, after a scenario that exercises them."""

    exported: set[str]
    labels: dict[str, set[str]]
    routes: set[str]


def _exported_names(family: Any) -> set[str]:
    """Series names a family can produce (prometheus_client strips ``_total`` from counters)."""
    name = family.name
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
        "summary": ["", "_sum", "_count", "_created"],
        "info": ["_info"],
    }.get(family.type, [""])
    return {name + suffix for suffix in suffixes}


def _drive(stack: Stack) -> None:
    """Requests through the ingress that make the lazily labelled metrics appear."""
    webhook_secret = stack.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"]
    with httpx.Client(base_url=stack.ingress_url, timeout=15, trust_env=False) as http:
        # A viewer made through auth's internal API (a failed login would count against
        # the shared stack's per-IP failure limit, so none is made here).
        username, password = create_user(stack, http, "viewer", prefix="metrics")
        login = http.post("/auth/login", json={"username": username, "password": password})
        assert login.status_code == 200, login.text
        viewer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert http.get("/pipelines/stats", headers=viewer).status_code == 200
        assert http.get("/pipelines", headers=viewer).status_code == 200
        # A client-credentials request with a wrong secret (a 401 of /auth/service-token).
        refused = http.post(
            "/auth/service-token",
            data={
                "grant_type": "client_credentials",
                "client_id": f"metrics-{secrets.token_hex(4)}",
                "client_secret": secrets.token_hex(32),
            },
        )
        assert refused.status_code == 401
        # A forged webhook delivery, then a signed one for a new run.
        forged = http.post(
            "/pipelines/webhooks/github",
            content=b"{}",
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": f"metrics-forged-{secrets.token_hex(8)}",
                "X-Hub-Signature-256": "sha256=" + "0" * 64,
            },
        )
        assert forged.status_code == 401
        payload = json.loads(WORKFLOW_RUN_FIXTURE.read_text())
        payload["workflow_run"]["id"] = secrets.randbelow(10**12) + 10**12
        body = json.dumps(payload).encode()
        signature = hmac.new(webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        delivered = http.post(
            "/pipelines/webhooks/github",
            content=body,
            headers={
                "X-GitHub-Event": "workflow_run",
                "X-GitHub-Delivery": f"metrics-{secrets.token_hex(8)}",
                "X-Hub-Signature-256": f"sha256={signature}",
                "Content-Type": "application/json",
            },
        )
        assert delivered.status_code == 202, delivered.text
        for service_name in SERVICES:  # readiness gauges are set by /readyz
            ready = http.get(f"{stack.service_url(service_name)}/readyz")
            assert ready.status_code == 200, ready.text
        _wait_until_mapped(http, stack)


def _wait_until_mapped(http: httpx.Client, stack: Stack) -> None:
    """The 202 means stored: the pipeline's worker maps the delivery afterwards, and only
    then has flightdeck_webhook_mapped_total{event,result} a sample."""
    url = f"{stack.service_url('pipeline')}/metrics"
    deadline = time.monotonic() + MAPPING_WAIT_SECONDS
    while True:
        families = text_string_to_metric_families(http.get(url).text)
        if any(f.name == "flightdeck_webhook_mapped" and f.samples for f in families):
            return
        assert time.monotonic() < deadline, (
            f"the signed delivery was not mapped within {MAPPING_WAIT_SECONDS:g} s "
            "(no sample of flightdeck_webhook_mapped_total on the pipeline's /metrics)"
        )
        time.sleep(0.1)


@pytest.fixture(scope="module")
def scraped(flightdeck_stack: Stack) -> Scraped:
    _drive(flightdeck_stack)
    urls = [f"{flightdeck_stack.service_url(s)}/metrics" for s in SERVICES]
    urls.append(f"http://127.0.0.1:{flightdeck_stack.config.metrics_port}/metrics")
    exported: set[str] = set()
    labels: dict[str, set[str]] = {}
    with httpx.Client(timeout=10, trust_env=False) as http:
        for url in urls:
            response = http.get(url)
            assert response.status_code == 200, url
            for family in text_string_to_metric_families(response.text):
                exported |= _exported_names(family)
                for sample in family.samples:
                    exported.add(sample.name)
                    labels.setdefault(sample.name, set()).update(sample.labels)
        routes: set[str] = set()
        for prefix in ("/auth", "/pipelines", "/admin"):
            schema = http.get(f"{flightdeck_stack.ingress_url}{prefix}/openapi.json")
            assert schema.status_code == 200
            routes |= set(schema.json()["paths"])
    return Scraped(exported, labels, routes)


@pytest.mark.e2e
def test_every_metric_used_in_a_rule_or_panel_is_exported(scraped: Scraped) -> None:
    missing = {}
    for expression in ALL_EXPRESSIONS:
        unknown = {
            name
            for name in usage(expression).metrics - scraped.exported - BUILTIN_METRICS
            if not name.startswith("prometheus_")  # Prometheus' own, from its own job
        }
        if unknown:
            missing[expression.where] = sorted(unknown)
    assert not missing, f"metrics no target exports: {missing}"


@pytest.mark.e2e
def test_scenario_gave_samples_to_every_metric_used(scraped: Scraped) -> None:
    used = {
        name
        for name in set().union(*(usage(e).metrics for e in ALL_EXPRESSIONS)) - BUILTIN_METRICS
        if not name.startswith("prometheus_")
    }
    without = used - set(scraped.labels) - NO_SAMPLE_EXPECTED
    assert not without, f"no sample after the scenario (labels unchecked): {sorted(without)}"


@pytest.mark.e2e
def test_every_label_used_exists_on_its_metric(scraped: Scraped) -> None:
    def known(metric: str) -> set[str]:
        if metric in BUILTIN_METRICS:
            return set(TARGET_LABELS)
        return scraped.labels.get(metric, set()) | TARGET_LABELS

    problems = []
    for expression in ALL_EXPRESSIONS:
        used = usage(expression)
        for metric, label in used.matched_labels:
            sampled = metric in scraped.labels or metric in BUILTIN_METRICS
            if sampled and label not in known(metric):
                problems.append(f"{expression.where}: {metric} has no label {label!r}")
        for metrics, label in used.grouping_labels:
            checked = {m for m in metrics if m in scraped.labels or m in BUILTIN_METRICS}
            if checked and not any(label in known(m) for m in checked):
                problems.append(f"{expression.where}: none of {sorted(checked)} has {label!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.e2e
def test_every_route_used_is_a_route_of_the_services(scraped: Scraped) -> None:
    problems = []
    for expression in ALL_EXPRESSIONS:
        for label, op, value in usage(expression).matchers:
            if label == "handler" and op in ("=", "=~"):
                unknown = set(alternatives(value)) - scraped.routes
                if unknown:
                    problems.append(f"{expression.where}: no route {sorted(unknown)}")
    assert not problems, "\n".join(problems)
