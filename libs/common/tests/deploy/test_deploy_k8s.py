"""Kubernetes manifests (deploy/k8s): every overlay renders, validates and is complete.

Each overlay is rendered with `kubectl kustomize` and every object is validated against the
Kubernetes JSON schemas that kubernetes-validate ships (strict: unknown fields are errors);
the Prometheus Operator's ServiceMonitor, a CRD it cannot know, is checked by hand. The
checks then read the rendered objects the way the cluster would: probes and ports resolve,
selectors match, the Ingress routes by longest prefix, NetworkPolicies are evaluated for
concrete peers, and each Deployment's environment (ConfigMaps + Secrets) is loaded into the
service's own Settings class.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from pydantic import AliasChoices, ValidationError

from flightdeck_admin.settings import Settings as AdminSettings
from flightdeck_auth.service_accounts.service import parse_bootstrap_accounts
from flightdeck_auth.settings import Settings as AuthSettings
from flightdeck_common.settings import CommonSettings
from flightdeck_pipeline.settings import Settings as PipelineSettings

REPO_ROOT = Path(__file__).resolve().parents[4]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"

# The newest Kubernetes version kubernetes-validate ships schemas for.
K8S_VERSION = kv_utils.latest_version()

SETTINGS: dict[str, type[CommonSettings]] = {
    "auth": AuthSettings,
    "pipeline": PipelineSettings,
    "admin": AdminSettings,
}
PORTS = {"auth": 8101, "pipeline": 8102, "admin": 8103}
# Who calls whom (service -> services it calls): JWKS, service tokens, revocation feed and
# internal user API at auth; audit outbox delivery at admin.
CALLS = {"auth": {"admin"}, "pipeline": {"auth", "admin"}, "admin": {"auth"}}
# Services with internal APIs that must never be reachable through the Ingress.
INTERNAL_PREFIXES = {"auth": "/auth/internal", "admin": "/admin/internal"}


@dataclass(frozen=True)
class Overlay:
    name: str
    namespace: str
    environment: str


OVERLAYS = {
    "dev": Overlay("dev", "flightdeck-dev", "development"),
    "prod": Overlay("prod", "flightdeck", "production"),
}
INGRESS_NAMESPACE = "traefik"
MONITORING_NAMESPACE = "monitoring"
# The Prometheus Operator's API: a CRD, so not in kubernetes-validate (checked by hand).
SERVICE_MONITOR_API = "monitoring.coreos.com/v1"


# --------------------------------------------------------------------------- rendering


def find_kubectl() -> str | None:
    """The virtual environment's kubectl (the one `make k8s-render` uses), else PATH's."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("kubectl")


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.fail("kubectl is not installed: it renders deploy/k8s (`kubectl kustomize`)")
    if overlay == "dev":  # its secrets are generated per clone, as `make k8s-render` does
        subprocess.run(
            [sys.executable, str(K8S_DIR / "overlays" / "dev" / "generate_secrets.py")],
            check=True,
            timeout=60,
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@dataclass
class Rendered:
    overlay: Overlay
    docs: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.docs if d["kind"] == kind}

    def get(self, kind: str, name: str) -> dict[str, Any]:
        objects = self.of_kind(kind)
        assert name in objects, f"{self.overlay.name}: no {kind} {name!r}"
        return objects[name]

    def data(self, kind: str, name: str) -> dict[str, str]:
        obj = self.get(kind, name)
        values = dict(obj.get("data") or {})
        if kind == "Secret":
            values = {k: base64.b64decode(v).decode() for k, v in values.items()}
            values |= obj.get("stringData") or {}
        return values


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(OVERLAYS[request.param], render(request.param))


# --------------------------------------------------------------------------- helpers


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def workloads(rendered: Rendered) -> Iterator[dict[str, Any]]:
    for doc in rendered.docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}:
            yield doc


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def app_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    return containers[0]


def named_ports(spec: dict[str, Any]) -> dict[str, int]:
    return {
        port["name"]: port["containerPort"]
        for container in spec["containers"]
        for port in container.get("ports", [])
        if "name" in port
    }


def resolve_port(port: int | str, ports: dict[str, int]) -> int | None:
    return port if isinstance(port, int) else ports.get(port)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics ({} matches everything)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def deployments(rendered: Rendered) -> dict[str, dict[str, Any]]:
    found = rendered.of_kind("Deployment")
    assert set(SETTINGS) <= set(found), f"{rendered.overlay.name}: Deployments {sorted(found)}"
    return {name: found[name] for name in SETTINGS}


def environment(rendered: Rendered, container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The container's environment as the kubelet builds it: name -> (value, source kind)."""
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in source:
                prefix = source.get("prefix", "")
                for key, value in rendered.data(kind, source[ref]["name"]).items():
                    env[prefix + key] = (value, kind)
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = (var["value"], "env")
            continue
        ref = var["valueFrom"]
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if key in ref:
                data = rendered.data(kind, ref[key]["name"])
                env[var["name"]] = (data[ref[key]["key"]], kind)
    return env


def env_prefix(service: str) -> str:
    return str(SETTINGS[service].model_config["env_prefix"])


def shared_keys() -> set[str]:
    """Environment names read without prefix (ENVIRONMENT, REDIS_URL, AUTH_URL, ...)."""
    keys: set[str] = set()
    for info in CommonSettings.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            keys |= {c.upper() for c in info.validation_alias.choices if isinstance(c, str)}
    return keys


def required_env(service: str) -> set[str]:
    """What a production service needs: its required secrets and a real database."""
    settings = SETTINGS[service]
    prefix = env_prefix(service)
    return {f"{prefix}{name}".upper() for name in settings.required_secrets} | {
        f"{prefix}DATABASE_URL"
    }


def load_settings(
    service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> CommonSettings:
    """Instantiate the service's Settings from exactly `env` (no .env file, no stray vars)."""
    shared = shared_keys()
    for key in list(os.environ):
        if key.upper().startswith("FLIGHTDECK_") or key.upper() in shared:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return SETTINGS[service](_env_file=None)


# --------------------------------------------------------------------------- schemas


def test_strict_schema_validation_catches_a_typo() -> None:
    typo = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replica": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "x", "image": "x"}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def check_service_monitor(doc: dict[str, Any]) -> list[str]:
    problems = []
    if doc.get("apiVersion") != SERVICE_MONITOR_API:
        problems.append(f"apiVersion {doc.get('apiVersion')!r}")
    if not doc.get("metadata", {}).get("name"):
        problems.append("metadata.name missing")
    spec = doc.get("spec") or {}
    if not isinstance(spec.get("selector"), dict):
        problems.append("spec.selector missing (required)")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.append("spec.endpoints missing or empty")
    for endpoint in endpoints or []:
        if not (isinstance(endpoint.get("port"), str) or "targetPort" in endpoint):
            problems.append(f"endpoint without port name: {endpoint}")
    return problems


def test_every_object_validates(rendered: Rendered) -> None:
    errors = []
    for doc in rendered.docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "ServiceMonitor":
            errors += [f"{name}: {problem}" for problem in check_service_monitor(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message}")
    assert not errors, f"{rendered.overlay.name} (Kubernetes {K8S_VERSION}):\n" + "\n".join(errors)


def test_everything_lands_in_the_overlay_namespace(rendered: Rendered) -> None:
    namespace = rendered.overlay.namespace
    ns = rendered.get("Namespace", namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in rendered.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]


# --------------------------------------------------------------------------- per service


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_each_service_has_its_objects(rendered: Rendered, service: str) -> None:
    deployment = rendered.get("Deployment", service)
    labels = pod_labels(deployment)
    rendered.get("ServiceAccount", service)
    rendered.get("Service", service)
    rendered.get("HorizontalPodAutoscaler", service)
    pdb = rendered.get("PodDisruptionBudget", service)
    assert selector_matches(pdb["spec"]["selector"], labels)
    assert selector_matches(deployment["spec"]["selector"], labels)


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_probes_ports_and_service_agree(rendered: Rendered, service: str) -> None:
    deployment = rendered.get("Deployment", service)
    spec = pod_spec(deployment)
    container = app_container(deployment)
    ports = named_ports(spec)
    assert ports.get("http") == PORTS[service]
    args = container["args"]
    assert args[0] == "serve"
    assert args[args.index("--port") + 1] == str(PORTS[service])
    assert args[args.index("--host") + 1] == "0.0.0.0"

    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert resolve_port(http_get["port"], ports) == PORTS[service], probe

    svc = rendered.get("Service", service)
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels(deployment))
    [port] = [p for p in svc["spec"]["ports"] if p.get("name") == "http"]
    assert resolve_port(port["targetPort"], ports) == PORTS[service]
    # The same number inside the cluster (AUTH_URL=http://auth:8101) as on a developer machine.
    assert port["port"] == PORTS[service]

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == PORTS[service]
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_rollout_and_shutdown(rendered: Rendered, service: str) -> None:
    deployment = rendered.get("Deployment", service)
    spec = pod_spec(deployment)
    grace = spec["terminationGracePeriodSeconds"]
    assert grace == 30
    pre_stop = app_container(deployment)["lifecycle"]["preStop"]
    if "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        delay = int(command[1])
    else:
        delay = int(pre_stop["sleep"]["seconds"])
    # Long enough for the endpoint to leave the load balancers, short enough to leave
    # time for the graceful shutdown (uvicorn: 10 s) within the grace period.
    assert 3 <= delay <= grace - 15

    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert str(strategy["maxUnavailable"]) == "0"

    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
    for constraint in spec["topologySpreadConstraints"]:
        assert selector_matches(constraint["labelSelector"], pod_labels(deployment))


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_autoscaling(rendered: Rendered, service: str) -> None:
    deployment = rendered.get("Deployment", service)
    # The HPA owns the replica count: a `replicas` field would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    hpa = rendered.get("HorizontalPodAutoscaler", service)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
    [metric] = hpa["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    # CPU utilization is relative to the request: without one the HPA cannot work.
    assert app_container(deployment)["resources"]["requests"]["cpu"]
    pdb = rendered.get("PodDisruptionBudget", service)["spec"]
    if rendered.overlay.name == "prod":
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
        assert pdb["minAvailable"] == 1
    else:
        assert "minAvailable" in pdb or "maxUnavailable" in pdb


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_migrations_run_before_the_app(rendered: Rendered, service: str) -> None:
    deployment = rendered.get("Deployment", service)
    app = app_container(deployment)
    [migrate] = pod_spec(deployment)["initContainers"]
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == app["image"]
    assert migrate["envFrom"] == app["envFrom"]
    assert "command" not in migrate  # the image's entrypoint: flightdeck-<service>

    # The on-demand Job template: suspended, same image and environment.
    cron = rendered.get("CronJob", f"{service}-migrate")
    assert cron["spec"]["suspend"] is True
    [job] = pod_spec(cron)["containers"]
    assert job["args"] == ["migrate"]
    assert job["image"] == app["image"]
    assert job["envFrom"] == app["envFrom"]
    assert pod_spec(cron)["restartPolicy"] in {"Never", "OnFailure"}
    # The app never migrates by itself: the init container does it, once, before it starts.
    env = environment(rendered, app)
    assert env[f"{env_prefix(service)}MIGRATE_ON_START"][0] == "false"


def test_images(rendered: Rendered) -> None:
    for workload in workloads(rendered):
        for container in all_containers(pod_spec(workload)):
            image = container["image"]
            if rendered.overlay.name == "prod":
                _, _, tag = image.rpartition(":")
                pinned = "@sha256:" in image or (tag and "/" not in tag and tag != "latest")
                assert pinned, f"prod image not pinned: {image}"
    images = {app_container(d)["image"].split(":")[0] for d in deployments(rendered).values()}
    assert images == {f"ghcr.io/flightdeck/flightdeck-{s}" for s in SETTINGS}


# --------------------------------------------------------------------------- pod security


def test_pod_security(rendered: Rendered) -> None:
    """Pod Security Standard "restricted", plus a read-only root filesystem and limits."""
    found = list(workloads(rendered))
    assert len(found) >= 2 * len(SETTINGS)  # Deployments and migration Jobs at least
    for workload in found:
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("runAsUser", 0) != 0, name
        assert pod_sc.get("fsGroup"), name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        for container in all_containers(spec):
            where = f"{name}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert not sc.get("privileged"), where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"


def test_flightdeck_pods_run_as_the_image_user_and_write_only_tmp(rendered: Rendered) -> None:
    for workload in workloads(rendered):
        if pod_labels(workload).get("app.kubernetes.io/name") not in SETTINGS:
            continue
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["serviceAccountName"] == pod_labels(workload)["app.kubernetes.io/name"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in all_containers(spec):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert set(mounts) == {"/tmp"}, f"{name}/{container['name']}: {mounts}"
            assert "emptyDir" in volumes[mounts["/tmp"]]
    for service in SETTINGS:
        account = rendered.get("ServiceAccount", service)
        assert account["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_required_settings_come_from_the_secret(rendered: Rendered, service: str) -> None:
    env = environment(rendered, app_container(rendered.get("Deployment", service)))
    for name in sorted(required_env(service)):
        assert name in env, f"{rendered.overlay.name}/{service}: {name} not provided"
        assert env[name][1] == "Secret", f"{name} must come from a Secret, not {env[name][1]}"
    assert env[f"{env_prefix(service)}DATABASE_URL"][0].startswith("postgresql+asyncpg://")
    assert env["ENVIRONMENT"][0] == rendered.overlay.environment
    assert "REDIS_URL" in env, "more than one replica needs Redis"
    if service != "auth":
        assert env[f"{env_prefix(service)}SERVICE_CLIENT_ID"][0] == service


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_variable_is_known_and_meant_for_its_service(
    rendered: Rendered, service: str
) -> None:
    """No typo silently ignored, and no service sees another one's secrets."""
    env = environment(rendered, app_container(rendered.get("Deployment", service)))
    prefix = env_prefix(service)
    fields = set(SETTINGS[service].model_fields)
    for key in env:
        if key.startswith("FLIGHTDECK_"):
            assert key.startswith(prefix), f"{service} receives another service's {key}"
            assert key.removeprefix(prefix).lower() in fields, f"{service}: unknown {key}"
        else:
            assert key in shared_keys(), f"{service}: unknown shared key {key}"


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_settings_load_from_the_rendered_environment(
    rendered: Rendered, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        key: value
        for key, (value, _) in environment(
            rendered, app_container(rendered.get("Deployment", service))
        ).items()
    }
    if rendered.overlay.environment == "production":
        # The committed secrets are a template: production refuses every placeholder ...
        assert any("REPLACE-ME" in value for value in env.values())
        with pytest.raises((ValidationError, ValueError)) as refused:
            load_settings(service, env, monkeypatch)
        for name in SETTINGS[service].required_secrets:
            assert f"{env_prefix(service)}{name}".upper() in str(refused.value)
        # ... and starts once real values replace them (64 hex digits: also the form of a
        # 32-byte Ed25519 seed, which the audit signing key may be given as).
        real = secrets.token_hex(32)
        env = {key: value.replace("REPLACE-ME", real) for key, value in env.items()}
    settings = load_settings(service, env, monkeypatch)
    assert settings.environment.value == rendered.overlay.environment
    assert settings.migrate_on_start is False
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.redis_url
    # Even the development values would pass the production rules.
    assert settings.production_problems() == []


def test_in_cluster_urls_point_at_services(rendered: Rendered) -> None:
    """AUTH_URL, ADMIN_URL, database and Redis URLs with a bare host name are Services here."""
    services = rendered.of_kind("Service")
    for service, deployment in deployments(rendered).items():
        env = environment(rendered, app_container(deployment))
        for key, (value, _) in env.items():
            if "://" not in value:
                continue
            url = urlsplit(value)
            if not url.hostname or "." in url.hostname:
                continue  # external (managed database, Redis, Sentry)
            assert url.hostname in services, f"{service}: {key} -> no Service {url.hostname}"
            ports = [p["port"] for p in services[url.hostname]["spec"]["ports"]]
            assert url.port in ports, f"{service}: {key} -> port {url.port} not in {ports}"
    [shared_config] = [
        n for n in rendered.of_kind("ConfigMap") if n.startswith("flightdeck-config-")
    ]
    shared = rendered.data("ConfigMap", shared_config)
    assert shared["AUTH_URL"] == f"http://auth:{PORTS['auth']}"
    assert shared["ADMIN_URL"] == f"http://admin:{PORTS['admin']}"


def test_only_the_ingress_controller_may_name_the_client(rendered: Rendered) -> None:
    """No manifest trusts X-Forwarded-For from any peer: FORWARDED_ALLOW_IPS (the ingress
    controller's pod network) reaches every container, and no container passes its own
    --forwarded-allow-ips."""
    for doc in rendered.docs:
        for text in _strings(doc):
            assert "--forwarded-allow-ips" not in text, f"{doc['metadata']['name']}: {text}"
    for service, deployment in deployments(rendered).items():
        for container in all_containers(pod_spec(deployment)):
            env = environment(rendered, container)
            trusted = env["FORWARDED_ALLOW_IPS"][0]
            assert trusted != "*", f"{service}/{container['name']} trusts every peer"
            for entry in trusted.split(","):
                ipaddress.ip_network(entry.strip(), strict=False)  # an address or CIDR
            assert env["FORWARDED_ALLOW_IPS"][1] == "ConfigMap"


def test_every_container_runs_in_the_overlay_environment(rendered: Rendered) -> None:
    """ENVIRONMENT is set for every Flightdeck container (the image defaults to production;
    only the dev overlay says development)."""
    for deployment in deployments(rendered).values():
        for container in all_containers(pod_spec(deployment)):
            env = environment(rendered, container)
            assert env["ENVIRONMENT"][0] == rendered.overlay.environment


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def test_development_service_accounts_match_the_clients() -> None:
    """dev runs in development mode: auth creates the service accounts the others use.
    (Production creates them with `flightdeck-auth create-service-account`.)"""
    rendered = Rendered(OVERLAYS["dev"], render("dev"))
    auth_env = environment(rendered, app_container(rendered.get("Deployment", "auth")))
    accounts = {
        client: (secret, set(audiences))
        for client, secret, audiences in parse_bootstrap_accounts(
            auth_env["FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS"][0]
        )
    }
    needed = {
        "pipeline": {"flightdeck:auth-revocations", "flightdeck:admin-internal"},
        "admin": {"flightdeck:auth-revocations", "flightdeck:auth-users"},
    }
    for service, audiences in needed.items():
        env = environment(rendered, app_container(rendered.get("Deployment", service)))
        client = env[f"{env_prefix(service)}SERVICE_CLIENT_ID"][0]
        secret, granted = accounts[client]
        assert env[f"{env_prefix(service)}SERVICE_CLIENT_SECRET"][0] == secret
        assert audiences <= granted
        if service == "pipeline":  # only what it calls: never user administration
            assert "flightdeck:auth-users" not in granted


# --------------------------------------------------------------------------- ingress


def route(ingress: dict[str, Any], path: str) -> tuple[str, str | int] | None:
    """The backend an Ingress picks for `path`: the longest matching path wins."""
    best: tuple[int, tuple[str, str | int]] | None = None
    for rule in ingress["spec"]["rules"]:
        for candidate in rule["http"]["paths"]:
            prefix, kind = candidate["path"], candidate["pathType"]
            if kind == "Exact":
                matches = path == prefix
            else:
                assert kind == "Prefix", f"use Prefix or Exact, not {kind}"
                base = prefix.rstrip("/")
                matches = path == base or path.startswith(base + "/") or prefix == "/"
            if matches and (best is None or len(prefix) > best[0]):
                port = candidate["backend"]["service"]["port"]
                target = (
                    candidate["backend"]["service"]["name"],
                    port.get("name") or port["number"],
                )
                best = (len(prefix), target)
    return best[1] if best else None


def test_ingress_routes_the_public_prefixes(rendered: Rendered) -> None:
    [ingress] = rendered.of_kind("Ingress").values()
    assert ingress["spec"]["ingressClassName"]
    services = rendered.of_kind("Service")
    for service, settings in SETTINGS.items():
        prefix = settings.public_prefix
        for path in (prefix, f"{prefix}/", f"{prefix}/docs", f"{prefix}/openapi.json"):
            target = route(ingress, path)
            assert target == (service, "http"), f"{path} -> {target}"
        svc_ports = {p["name"]: p["port"] for p in services[service]["spec"]["ports"]}
        assert svc_ports["http"] == PORTS[service]
    assert route(ingress, "/pipelines/webhooks/github") == ("pipeline", "http")
    assert route(ingress, "/auth/.well-known/jwks.json") == ("auth", "http")
    # Health, readiness and metrics stay inside the cluster.
    for path in ("/", "/healthz", "/readyz", "/metrics", "/docs"):
        assert route(ingress, path) is None, path


def test_ingress_keeps_internal_routes_closed(rendered: Rendered) -> None:
    [ingress] = rendered.of_kind("Ingress").values()
    services = rendered.of_kind("Service")
    for service, prefix in INTERNAL_PREFIXES.items():
        real = services[service]
        deployment = rendered.get("Deployment", service)
        for path in (prefix, f"{prefix}/users", f"{prefix}/audit-events"):
            target = route(ingress, path)
            assert target is not None, f"{path} falls through to nothing"
            name, port_ref = target
            assert name != service, f"{path} reaches {service}"
            blocked = services[name]
            # Same pods as the real Service: both routes have endpoints or neither has.
            assert blocked["spec"]["selector"] == real["spec"]["selector"]
            [port] = [p for p in blocked["spec"]["ports"] if port_ref in (p.get("name"), p["port"])]
            target_port = port["targetPort"]
            # A port the pods do not serve.
            assert isinstance(target_port, int), "a named targetPort could resolve to http"
            assert target_port not in named_ports(pod_spec(deployment)).values()


def test_prod_ingress_has_a_host_and_tls() -> None:
    rendered = Rendered(OVERLAYS["prod"], render("prod"))
    [ingress] = rendered.of_kind("Ingress").values()
    hosts = {rule.get("host") for rule in ingress["spec"]["rules"]}
    assert None not in hosts
    assert hosts <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}


# --------------------------------------------------------------------------- network policy


@dataclass
class Peer:
    """A pod (namespace + labels + named ports) or an address outside the cluster."""

    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    ip: str | None = None


def _ns_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def _peer_matches(peer_rule: dict[str, Any], peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in peer_rule:
        if peer.ip is None:
            return False
        block = peer_rule["ipBlock"]
        address = ipaddress.ip_address(peer.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if peer.namespace is None:
        return False
    ns_selector = peer_rule.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = peer.namespace == policy_ns
    else:
        in_namespace = selector_matches(ns_selector, _ns_labels(peer.namespace))
    pod_selector = peer_rule.get("podSelector")
    return in_namespace and (pod_selector is None or selector_matches(pod_selector, peer.labels))


def _port_matches(rules: list[dict[str, Any]] | None, dst: Peer, port: int, proto: str) -> bool:
    if not rules:
        return True
    for rule in rules:
        if rule.get("protocol", "TCP") != proto:
            continue
        if "port" not in rule:
            return True
        wanted = rule["port"]
        number = wanted if isinstance(wanted, int) else dst.ports.get(wanted)
        end = rule.get("endPort", number)
        if number is not None and number <= port <= end:
            return True
    return False


def allowed(rendered: Rendered, src: Peer, dst: Peer, port: int, proto: str = "TCP") -> bool:
    """Whether the namespace's NetworkPolicies let `src` open `port` on `dst`."""
    ns = rendered.overlay.namespace
    policies = list(rendered.of_kind("NetworkPolicy").values())

    def side(direction: str, subject: Peer, other: Peer, peers_key: str) -> bool:
        if subject.namespace != ns:
            return True  # another namespace's policies are not ours to check
        selecting = [
            p
            for p in policies
            if direction in p["spec"].get("policyTypes", ["Ingress"])
            and selector_matches(p["spec"]["podSelector"], subject.labels)
        ]
        if not selecting:
            return True
        for policy in selecting:
            for rule in policy["spec"].get(direction.lower(), []):
                peers = rule.get(peers_key)
                if peers and not any(_peer_matches(pr, other, ns) for pr in peers):
                    continue
                if _port_matches(rule.get("ports"), dst, port, proto):
                    return True
        return False

    return side("Egress", src, dst, "to") and side("Ingress", dst, src, "from")


def peers(rendered: Rendered) -> dict[str, Peer]:
    """Every pod the overlay runs, by workload name, plus outsiders."""
    ns = rendered.overlay.namespace
    found = {
        workload["metadata"]["name"]: Peer(
            ns, pod_labels(workload), named_ports(pod_spec(workload))
        )
        for workload in workloads(rendered)
    }
    return found | {
        "ingress-controller": Peer(INGRESS_NAMESPACE, {"app.kubernetes.io/name": "traefik"}),
        "prometheus": Peer(MONITORING_NAMESPACE, {"app.kubernetes.io/name": "prometheus"}),
        "other-namespace": Peer("default", {"app": "anything"}),
        "stray-pod": Peer(ns, {"app": "debug"}),
        "managed-db": Peer(None, ip="10.20.30.40"),
        "internet": Peer(None, ip="203.0.113.7"),
    }


def test_network_policies_deny_by_default(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy").values()
    for direction in ("Ingress", "Egress"):
        assert any(
            p["spec"]["podSelector"] == {}
            and p["spec"].get("policyTypes") == [direction]
            and not p["spec"].get(direction.lower())
            for p in policies
        ), f"no default-deny {direction} policy"


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_network_policies_allow_exactly_the_needed_ingress(
    rendered: Rendered, service: str
) -> None:
    pods = peers(rendered)
    dst = pods[service]
    http = PORTS[service]
    assert allowed(rendered, pods["ingress-controller"], dst, http)
    assert allowed(rendered, pods["prometheus"], dst, http)
    assert not allowed(rendered, pods["other-namespace"], dst, http)
    assert not allowed(rendered, pods["stray-pod"], dst, http)
    assert not allowed(rendered, pods[f"{service}-migrate"], dst, http)
    for caller, callees in CALLS.items():
        if caller != service:
            expected = service in callees
            assert allowed(rendered, pods[caller], dst, http) is expected, f"{caller}->{service}"


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_network_policies_allow_the_needed_egress(rendered: Rendered, service: str) -> None:
    pods = peers(rendered)
    for name in (service, f"{service}-migrate"):
        src = pods[name]
        assert allowed(rendered, src, pods["managed-db"], 53, "UDP"), name
        assert allowed(rendered, src, pods["managed-db"], 5432), name
        assert not allowed(rendered, src, pods["internet"], 22), name
    src = pods[service]
    assert allowed(rendered, src, pods["managed-db"], 6379)
    assert not allowed(rendered, src, pods["internet"], 443)
    for callee in CALLS[service]:
        assert allowed(rendered, src, pods[callee], PORTS[callee]), f"{service}->{callee}"
    if "postgres" in pods:
        assert allowed(rendered, pods[f"{service}-migrate"], pods["postgres"], 5432)
        assert allowed(rendered, src, pods["postgres"], 5432)
        assert allowed(rendered, src, pods["redis"], 6379)
        assert not allowed(rendered, pods["ingress-controller"], pods["postgres"], 5432)
        assert not allowed(rendered, pods["stray-pod"], pods["redis"], 6379)


# --------------------------------------------------------------------------- overlays


def test_backing_services_and_monitoring_per_overlay(rendered: Rendered) -> None:
    statefulsets = rendered.of_kind("StatefulSet")
    monitors = rendered.of_kind("ServiceMonitor")
    services = rendered.of_kind("Service")
    if rendered.overlay.name == "prod":
        assert not statefulsets, "prod expects managed PostgreSQL and Redis"
        assert set(monitors) == set(SETTINGS)
        for name, monitor in monitors.items():
            selected = [
                svc
                for svc in services.values()
                if selector_matches(monitor["spec"]["selector"], svc["metadata"]["labels"])
            ]
            assert [s["metadata"]["name"] for s in selected] == [name]
            [endpoint] = monitor["spec"]["endpoints"]
            assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
            assert endpoint.get("path", "/metrics") == "/metrics"
    else:
        assert set(statefulsets) == {"postgres", "redis"}
        assert not monitors, "dev does not need the Prometheus Operator"
        for name, sts in statefulsets.items():
            assert sts["spec"]["volumeClaimTemplates"], name
            governing = services[sts["spec"]["serviceName"]]
            assert selector_matches({"matchLabels": governing["spec"]["selector"]}, pod_labels(sts))
