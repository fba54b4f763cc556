"""Schema fuzzing: schemathesis drives every operation of every service through the ingress.

Cases come from the committed schemas (``openapi/<service>.json``, which the contract test
keeps equal to the live ones) and go to a stack of real processes behind Traefik. Every
response must pass four checks: no 5xx, a declared status code, the declared content type,
and a body that matches the declared schema. A failure names the operation, the check and a
``curl`` line that reproduces it; each finding gets a plain regression test next to the
service's own tests.

Bounded and deterministic: a fixed seed, ``derandomize``, no example database, and
``FLIGHTDECK_FUZZ_EXAMPLES`` generated cases per operation (default 6 here; ``make fuzz``
asks for many more), on top of the schema's examples and schemathesis' coverage cases.

The fuzzer runs on its own stack, not on the session's ``flightdeck_stack``. Limits that
other tests depend on are per client address, and every test speaks from 127.0.0.1: 20 failed
logins lock the address for every login, five registration requests an hour exhaust the
registration limit, 60 service tokens a minute the service-token limit. A fuzzer may not
spend those for the rest of the suite, and it is not worth fuzzing with those routes left
out. On its own stack these limits are raised (they stay declared, so a 429 or 423 is still
a conforming answer) and the audit chain it grows is nobody else's.

Even there it never acts as the bootstrap admin. It makes its own users through auth's
internal API and gives each operation the identity it needs (``_identity``):

- public operations get no credentials; the webhook gets a valid signature (below);
- auth's internal API gets admin's service token, admin's internal API pipeline's;
- other auth operations run as an admin made for them (``/auth/me*`` then concerns that
  admin; the service-account administration needs the role); ``/auth/logout`` revokes the
  access token it is called with, so each logout case logs a throwaway user in first;
- pipeline operations run as an operator (every route, writes included), admin operations
  as an admin;
- operations that change a user by id (role, active flag) target one victim user made for
  that purpose, whatever id was generated: a generated id could be the fuzzer's own admin
  (or, on a shared stack, anyone's); a service account to deactivate is never one the
  stack's services use (the fuzzer's own credentials come from them).

Schemathesis does not generate the credentials itself (``with-security-parameters`` off):
the checks are about the API's answers to well-authenticated requests; refusals of missing
or bad credentials have their own tests in each service.

GitHub webhooks: a delivery is only processed once its ``X-Hub-Signature-256`` matches the
body, so each case is signed (``_GitHubSignature``, over the exact bytes sent) to reach the
parsing and mapping code. Three cases in four also get an event the service maps and a
well-formed delivery id; the fourth keeps the generated headers, so refusals of unknown or
malformed events are fuzzed as well.

Event streams never end: schemathesis reads them until the request timeout, so those two
operations get a short timeout and few cases.

Paths with an ambiguous percent-encoded character (``%2F``, ``%5C``, ``%00``, ``%3B``,
``%25``, ``%3F``, ``%23``) never reach a service: Traefik refuses them with a bare 400 (the
``encodedCharacters`` hardening in ``devstack/traefik.py``, so that the ingress and the
services cannot disagree on what a path means). The schemas describe the services, so
for such a case the check is exactly that refusal, made by the ingress.

At the end, the module prints how many cases each service got and the statuses they met.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.passwords import PasswordHasher
from flightdeck_common.testing.plugin import isolated_stack_config
from flightdeck_common.testing.stack_users import create_admin, service_token

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[4]
OPENAPI_DIR = REPO_ROOT / "openapi"

SEED = 20261125
EXAMPLES = int(os.environ.get("FLIGHTDECK_FUZZ_EXAMPLES", "6"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
REQUEST_TIMEOUT = 15.0
STREAM_TIMEOUT = 0.3  # an event stream is read this long, then judged on what arrived
STREAM_OPERATIONS = {"stream_events", "stream_audit_events"}
TOKEN_MAX_AGE = 300.0  # renewed well before expiry (service tokens: 10 min, users: 15)
# Webhook events the pipeline answers (ping) or maps into runs, deployments, incidents.
MAPPED_GITHUB_EVENTS = (
    "deployment",
    "deployment_status",
    "issues",
    "ping",
    "push",
    "workflow_job",
    "workflow_run",
)
# Percent-encoded characters Traefik refuses in a path (see the module docstring).
INGRESS_REFUSED_ENCODINGS = re.compile(r"%(2F|5C|00|3B|25|3F|23)", re.IGNORECASE)
HIGH = "100000/minute"
FUZZ_STACK_ENV = {
    "LOG_LEVEL": "WARNING",
    "FLIGHTDECK_AUTH_RATE_LIMIT_DEFAULT": HIGH,
    "FLIGHTDECK_AUTH_RATE_LIMIT_LOGIN": HIGH,
    "FLIGHTDECK_AUTH_RATE_LIMIT_REFRESH": HIGH,
    "FLIGHTDECK_AUTH_RATE_LIMIT_SERVICE_TOKEN": HIGH,
    "FLIGHTDECK_ADMIN_RATE_LIMIT_REGISTRATION": HIGH,
    # Failed logins from the fuzzer's address must not lock out the fuzzer's own logins, nor
    # its admin's wrong current passwords (POST /auth/me/password counts them) that admin's.
    "FLIGHTDECK_AUTH_LOGIN_MAX_FAILURES_PER_IP": "1000000",
    "FLIGHTDECK_AUTH_LOGIN_MAX_FAILURES_PER_USER": "1000000",
}


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES,
                "deterministic": True,
                "database": "none",
                "with-security-parameters": False,
            },
            "operations": [
                {
                    "include-operation-id": sorted(STREAM_OPERATIONS),
                    "generation": {"max-examples": min(EXAMPLES, 2)},
                    "request-timeout": STREAM_TIMEOUT,
                }
            ],
        }
    )


def _schema(service: str) -> Any:
    return schemathesis.openapi.from_path(OPENAPI_DIR / f"{service}.json", config=_config())


auth_schema = _schema("auth")
pipeline_schema = _schema("pipeline")
admin_schema = _schema("admin")


# --- the fuzzer's own stack and identities ------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = isolated_stack_config(tmp_path_factory.mktemp("fuzz-stack"), FUZZ_STACK_ENV)
    with Stack(config) as stack:
        yield stack


@dataclass
class _Session:
    headers: dict[str, str]
    made_at: float = field(default_factory=time.monotonic)


class FuzzIdentities:
    """Credentials for each kind of operation, made through the ingress and renewed
    before they expire (``make fuzz`` outlives a 15-minute access token)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.ingress_url, timeout=REQUEST_TIMEOUT)
        self._sessions: dict[str, _Session] = {}
        self.hasher = PasswordHasher()
        self._throwaway_user: tuple[str, str, int] | None = None
        self.victim_id = self._create_user("viewer")[2]

    def close(self) -> None:
        self.http.close()

    def service(self, account: str) -> dict[str, str]:
        """A service token of ``account`` (``pipeline`` or ``admin``)."""
        return self._cached(f"service:{account}", lambda: self._service_token(account))

    def user(self, role: str) -> dict[str, str]:
        """An access token of a user with ``role`` that only the fuzzer uses."""
        return self._cached(f"user:{role}", lambda: self._login(*self._create_user(role)[:2]))

    def throwaway(self) -> dict[str, str]:
        """A fresh access token nobody else holds (for a case that revokes it)."""
        if self._throwaway_user is None:
            self._throwaway_user = self._create_user("viewer")
        username, password, _ = self._throwaway_user
        return self._login(username, password)

    def _cached(self, key: str, make: Any) -> dict[str, str]:
        current = self._sessions.get(key)
        if current is None or time.monotonic() - current.made_at > TOKEN_MAX_AGE:
            current = self._sessions[key] = _Session(make())
        return current.headers

    def _service_token(self, account: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {service_token(self.stack, self.http, account)}"}

    def _create_user(self, role: str) -> tuple[str, str, int]:
        username = f"fuzz-{role}-{secrets.token_hex(4)}"
        password = f"passphrase-{secrets.token_urlsafe(12)}"
        if role == "admin":  # granted through the internal API only on an admin's behalf
            create_admin(self.stack, username, password)
            return username, password, -1
        created = self.http.post(
            f"{self.stack.service_call_url('auth')}/auth/internal/users",
            json={
                "username": username,
                "password_hash": asyncio.run(self.hasher.hash(password)),
                "role": role,
            },
            headers=self.service("admin"),
        )
        assert created.status_code == 201, created.text
        user_id = int(created.json()["id"])
        return username, password, user_id

    def _login(self, username: str, password: str) -> dict[str, str]:
        response = self.http.post("/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def identities(fuzz_stack: Stack) -> Iterator[FuzzIdentities]:
    made = FuzzIdentities(fuzz_stack)
    try:
        yield made
    finally:
        made.close()


def _webhook_secret(stack: Stack) -> bytes:
    return stack.config.extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"].encode()


class _GitHubSignature(requests.auth.AuthBase):
    """Signs the request exactly as sent (after schemathesis serialized the body) and, for
    three cases in four, names a mapped event and a well-formed delivery id."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        digest = zlib.crc32(raw)
        if digest % 4:
            request.headers["X-GitHub-Event"] = MAPPED_GITHUB_EVENTS[
                digest % len(MAPPED_GITHUB_EVENTS)
            ]
            request.headers["X-GitHub-Delivery"] = f"fuzz-{hashlib.sha256(raw).hexdigest()[:32]}"
        mac = hmac.new(self.secret, raw, hashlib.sha256).hexdigest()
        request.headers["X-Hub-Signature-256"] = f"sha256={mac}"
        return request


# --- who calls what ---------------------------------------------------------------------------

# Operations that change a user by id: always aimed at the victim user (see module docstring).
USER_CHANGING_OPERATIONS = {"update_internal_user", "update_user"}
# The stack's service accounts (``Stack.service_env``): never deactivated by the fuzzer.
STACK_SERVICE_ACCOUNTS = {"pipeline", "admin"}


def _identity(service: str, case: schemathesis.Case, who: FuzzIdentities) -> dict[str, str]:
    operation = case.operation.definition.raw
    operation_id = operation["operationId"]
    parameters = case.path_parameters or {}
    if operation_id in USER_CHANGING_OPERATIONS:
        case.path_parameters = {**parameters, "user_id": who.victim_id}
    if case.method.upper() == "DELETE" and parameters.get("client_id") in STACK_SERVICE_ACCOUNTS:
        case.path_parameters = {**parameters, "client_id": "fuzz-victim"}
    if not operation.get("security") or operation_id == "receive_github_webhook":
        return {}
    path = case.operation.path
    if service == "auth":
        if path.startswith("/auth/internal/"):
            return who.service("admin")
        if operation_id == "logout":
            return who.throwaway()
        return who.user("admin")
    if service == "admin":
        if path.startswith("/admin/internal/"):
            return who.service("pipeline")
        return who.user("admin")
    return who.user("operator")


STATUSES: dict[str, Counter[int]] = {}


@pytest.fixture(scope="module", autouse=True)
def fuzz_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print, per service, how many cases ran and which statuses they met."""
    STATUSES.clear()
    started = time.monotonic()
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        reporter.write_line("")
        reporter.write_sep(
            "-", f"schema fuzzing: {EXAMPLES} generated cases per operation, seed {SEED}"
        )
        for service, statuses in STATUSES.items():
            seen = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
            reporter.write_line(f"{service}: {sum(statuses.values())} cases ({seen})")
        reporter.write_line(f"{time.monotonic() - started:.1f} s, stack start included")


INTERNAL_PATH = re.compile(r"^/(auth|admin)/internal(/|$)")


def _refused_by_ingress(case: schemathesis.Case, base_url: str) -> bool:
    url = case.as_transport_kwargs(base_url=base_url)["url"]
    return bool(INGRESS_REFUSED_ENCODINGS.search(urlsplit(url).path))


def _call_and_check(
    service: str, case: schemathesis.Case, stack: Stack, who: FuzzIdentities
) -> None:
    headers = _identity(service, case, who)
    kwargs: dict[str, Any] = {}
    if case.operation.definition.raw["operationId"] == "receive_github_webhook":
        kwargs["auth"] = _GitHubSignature(_webhook_secret(stack))
    if INTERNAL_PATH.match(case.operation.path):
        # Service-to-service APIs: the ingress answers 404 for them (tested end to end);
        # they are fuzzed where the services call them.
        response = case.call_and_validate(
            base_url=stack.service_call_url(service), headers=headers, checks=CHECKS, **kwargs
        )
    elif _refused_by_ingress(case, stack.ingress_url):
        response = case.call(base_url=stack.ingress_url, headers=headers, **kwargs)
        # Traefik's own refusal: no service answered (they all set X-Request-ID).
        assert response.status_code == 400, response.text
        assert "X-Request-ID" not in response.headers
    else:
        response = case.call_and_validate(
            base_url=stack.ingress_url, headers=headers, checks=CHECKS, **kwargs
        )
    STATUSES.setdefault(service, Counter())[response.status_code] += 1


# Example counts come from the schemathesis config (per operation); these only quiet Hypothesis.
FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


@auth_schema.parametrize()
@FUZZ_SETTINGS
def test_auth(case: schemathesis.Case, fuzz_stack: Stack, identities: FuzzIdentities) -> None:
    _call_and_check("auth", case, fuzz_stack, identities)


@pipeline_schema.parametrize()
@FUZZ_SETTINGS
def test_pipeline(case: schemathesis.Case, fuzz_stack: Stack, identities: FuzzIdentities) -> None:
    _call_and_check("pipeline", case, fuzz_stack, identities)


@admin_schema.parametrize()
@FUZZ_SETTINGS
def test_admin(case: schemathesis.Case, fuzz_stack: Stack, identities: FuzzIdentities) -> None:
    _call_and_check("admin", case, fuzz_stack, identities)
