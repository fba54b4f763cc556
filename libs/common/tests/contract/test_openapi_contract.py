"""The OpenAPI schemas are a product: complete, exact, committed and reviewed.

Each service's app is built as ``make openapi`` builds it (no lifespan, no database) and its
schema is checked against the committed ``openapi/<service>.json`` and against the rules
generated clients and fuzzers rely on: every operation summarized, tagged, named, with a
typed success response, every error it can return declared as ``application/problem+json``,
security said explicitly, examples on the main request bodies that match their schemas.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from openapi_spec_validator import validate as validate_openapi

from flightdeck_common.errors import PROBLEM_JSON, PROBLEM_TYPE_PREFIX
from flightdeck_common.openapi import PROBLEM_REF, documented_routes, operations
from flightdeck_common.openapi_export import SERVICES, build_app, render, schema_path

REPO_ROOT = Path(__file__).resolve().parents[4]
OPENAPI_DIR = REPO_ROOT / "openapi"

# Operations anyone may call: everything else must require a security scheme.
PUBLIC_OPERATIONS = {
    "auth": {"login", "login_mfa", "refresh_token", "create_service_token", "read_jwks"},
    "pipeline": set(),
    "admin": {"create_registration_request"},
}
# Operations authenticated by something other than a bearer token.
OTHER_SECURITY = {"pipeline": {"receive_github_webhook": [{"GitHubSignature": []}]}}
# The request bodies clients most often build by hand: each shows an example.
MAIN_REQUEST_BODIES = {
    "auth": {"login"},
    "pipeline": {
        "upsert_pipeline",
        "append_pipeline_logs",
        "create_deployment",
        "create_incident",
        "receive_github_webhook",
    },
    "admin": {
        "create_registration_request",
        "approve_registration_request",
        "reject_registration_request",
        "update_user",
        "append_audit_events",
    },
}
OPERATION_ID = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
STATUS_KEY = re.compile(r"^([1-5][0-9][0-9]|[1-5]XX|default)$")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def apps() -> dict[str, FastAPI]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return {service: build_app(service) for service in SERVICES}
    finally:  # the app factory configures logging for a server process; not for this one
        root.handlers, root.level = handlers, level


@pytest.fixture(scope="module")
def schemas(apps: dict[str, FastAPI]) -> dict[str, dict[str, Any]]:
    return {service: app.openapi() for service, app in apps.items()}


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for method, path, operation in operations(schema):
        yield f"{method.upper()} {path} ({operation.get('operationId')})", operation


def _problems(failures: list[str]) -> str:
    return "\n  " + "\n  ".join(failures)


services = pytest.mark.parametrize("service", sorted(SERVICES))


# --- the committed schema -------------------------------------------------------------------


@services
def test_the_committed_schema_is_the_live_one(
    service: str, schemas: dict[str, dict[str, Any]]
) -> None:
    path = schema_path(service, OPENAPI_DIR)
    live = render(schemas[service])
    committed = path.read_text(encoding="utf-8") if path.is_file() else ""
    if committed != live:
        diff = difflib.unified_diff(
            committed.splitlines(), live.splitlines(), "committed", "live", lineterm="", n=2
        )
        excerpt = "\n".join(list(diff)[:60])
        pytest.fail(
            f"openapi/{service}.json differs from the schema the service serves: run "
            f"`make openapi` and review the diff.\n{excerpt}"
        )


def test_make_openapi_writes_every_service() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^openapi:.*## ", makefile, re.MULTILINE)
    assert "flightdeck_common.openapi_export" in makefile
    assert set(SERVICES) == set(PUBLIC_OPERATIONS)


def test_render_is_stable_and_ends_with_a_newline() -> None:
    schema = {"b": [2, 1], "a": {"é": 1}}
    assert render(schema) == '{\n  "a": {\n    "é": 1\n  },\n  "b": [\n    2,\n    1\n  ]\n}\n'


# --- every operation --------------------------------------------------------------------------


@services
def test_every_operation_is_summarized_tagged_and_named(
    service: str, schemas: dict[str, dict[str, Any]]
) -> None:
    schema = schemas[service]
    declared_tags = {tag["name"]: tag.get("description") for tag in schema.get("tags", [])}
    failures = []
    for where, operation in _operations(schema):
        op_id = operation.get("operationId", "")
        summary = operation.get("summary", "")
        if not OPERATION_ID.match(op_id):
            failures.append(f"{where}: operationId {op_id!r} is not a snake_case handler name")
        # FastAPI's fallback is the handler name in title case: a summary nobody wrote.
        if not summary or summary == op_id.replace("_", " ").title():
            failures.append(f"{where}: no summary (set summary= on the route)")
        if not operation.get("description"):
            failures.append(f"{where}: no description (the handler's docstring)")
        tags = operation.get("tags", [])
        if len(tags) != 1:
            failures.append(f"{where}: tags {tags} (want exactly one)")
        for tag in tags:
            if not declared_tags.get(tag):
                failures.append(f"{where}: tag {tag!r} has no description in openapi_tags")
    assert not failures, _problems(failures)


@services
def test_operation_ids_are_unique(service: str, schemas: dict[str, dict[str, Any]]) -> None:
    ids = [operation["operationId"] for _, operation in _operations(schemas[service])]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@services
def test_every_operation_has_a_typed_success_response(
    service: str, schemas: dict[str, dict[str, Any]]
) -> None:
    failures = []
    for where, operation in _operations(schemas[service]):
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        if not successes:
            failures.append(f"{where}: no 2xx response")
        for status, response in successes.items():
            content = response.get("content", {})
            if status == "204":
                if content:
                    failures.append(f"{where}: 204 with a body")
                continue
            if "text/event-stream" in content:
                continue
            if not content.get("application/json", {}).get("schema"):
                failures.append(f"{where}: {status} without a JSON schema (set response_model)")
            elif content["application/json"]["schema"] == {}:
                failures.append(f"{where}: {status} with an empty schema (set response_model)")
    assert not failures, _problems(failures)


@services
def test_every_operation_declares_the_errors_it_can_return(
    service: str, schemas: dict[str, dict[str, Any]]
) -> None:
    failures = []
    for where, operation in _operations(schemas[service]):
        declared = set(operation["responses"])
        expected = {"500", "503"}
        if operation.get("security"):
            expected.add("401")
        if "requestBody" in operation:
            expected |= {"400", "413", "422"}
        if operation.get("parameters"):
            expected.add("422")
        missing = expected - declared
        if missing:
            failures.append(f"{where}: does not declare {sorted(missing)}")
    assert not failures, _problems(failures)


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


# Routes that throttle by themselves rather than through a rate_limit_* dependency: the
# webhook receiver limits a source flagged for rejected signatures before it reads the
# body (429 webhook_source_throttled; webhooks/verification.py).
SELF_THROTTLED = {"pipeline": {"receive_github_webhook"}}


@services
def test_rate_limited_operations_declare_429_and_only_they(
    service: str, apps: dict[str, FastAPI], schemas: dict[str, dict[str, Any]]
) -> None:
    limited = {
        route.unique_id
        for route in documented_routes(apps[service])
        if any(
            getattr(dep.call, "__name__", "").startswith("rate_limit_")
            for dep in _dependencies(route.dependant)
        )
    }
    declaring = {
        operation["operationId"]
        for _, operation in _operations(schemas[service])
        if "429" in operation["responses"]
    }
    assert declaring == limited | SELF_THROTTLED.get(service, set())
    if service in ("auth", "admin"):
        assert limited, "the login and registration routes are rate limited"


@services
def test_every_error_is_a_problem(service: str, schemas: dict[str, dict[str, Any]]) -> None:
    schema = schemas[service]
    problem = _validator(schema, {"$ref": PROBLEM_REF})
    failures = []
    for where, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            content = response.get("content", {})
            if set(content) != {PROBLEM_JSON}:
                failures.append(f"{where}: {status} served as {sorted(content)}")
                continue
            media = content[PROBLEM_JSON]
            if media.get("schema") != {"$ref": PROBLEM_REF}:
                failures.append(f"{where}: {status} does not use the Problem schema")
            if not response.get("description"):
                failures.append(f"{where}: {status} without a description")
            for code, example in media.get("examples", {}).items():
                value = example.get("value", {})
                errors = [e.message for e in problem.iter_errors(value)]
                if errors:
                    failures.append(f"{where}: {status} example {code!r}: {errors}")
                if value.get("status") != int(status) or value.get("code") != code:
                    failures.append(f"{where}: {status} example {code!r} has another status/code")
                if value.get("type") != PROBLEM_TYPE_PREFIX + code:
                    failures.append(f"{where}: {status} example {code!r} has another type")
    assert not failures, _problems(failures)


def test_the_problem_schema_documents_the_members_clients_read(
    schemas: dict[str, dict[str, Any]],
) -> None:
    for schema in schemas.values():
        problem = schema["components"]["schemas"]["Problem"]
        assert {"type", "title", "status", "code"} <= set(problem["required"])
        assert {"detail", "instance", "request_id", "errors"} <= set(problem["properties"])
        assert problem.get("additionalProperties") is True  # extension members (mfa_token...)


def test_the_login_documents_the_mfa_token_of_its_401(schemas: dict[str, dict[str, Any]]) -> None:
    responses = schemas["auth"]["paths"]["/auth/login"]["post"]["responses"]
    examples = responses["401"]["content"][PROBLEM_JSON]["examples"]
    assert "mfa_token" in examples["mfa_required"]["value"]
    assert {"invalid_credentials", "mfa_required"} <= set(examples)


# --- security -------------------------------------------------------------------------------


@services
def test_security_schemes_are_declared(service: str, schemas: dict[str, dict[str, Any]]) -> None:
    schemes = schemas[service]["components"]["securitySchemes"]
    bearer = schemes["HTTPBearer"]
    assert (bearer["type"], bearer["scheme"], bearer["bearerFormat"]) == ("http", "bearer", "JWT")
    assert bearer.get("description")
    if service == "pipeline":
        github = schemes["GitHubSignature"]
        assert (github["type"], github["in"], github["name"]) == (
            "apiKey",
            "header",
            "X-Hub-Signature-256",
        )
        assert github.get("description")


@services
def test_every_operation_says_how_it_is_authenticated(
    service: str, schemas: dict[str, dict[str, Any]]
) -> None:
    schema = schemas[service]
    schemes = set(schema["components"]["securitySchemes"])
    other = OTHER_SECURITY.get(service, {})
    failures = []
    for where, operation in _operations(schema):
        op_id = operation["operationId"]
        if "security" not in operation:
            failures.append(f"{where}: no security key (public operations say security: [])")
            continue
        security = operation["security"]
        for requirement in security:
            unknown = set(requirement) - schemes
            if unknown:
                failures.append(f"{where}: unknown security schemes {sorted(unknown)}")
        if op_id in PUBLIC_OPERATIONS[service]:
            expected: list[dict[str, list[str]]] = []
        else:
            expected = other.get(op_id, [{"HTTPBearer": []}])
        if security != expected:
            failures.append(f"{where}: security {security}, expected {expected}")
    assert not failures, _problems(failures)


# --- request bodies and their examples ------------------------------------------------------


@services
def test_the_main_request_bodies_have_examples(
    service: str, schemas: dict[str, dict[str, Any]]
) -> None:
    by_id = {operation["operationId"]: operation for _, operation in _operations(schemas[service])}
    failures = []
    for op_id in sorted(MAIN_REQUEST_BODIES[service]):
        media = by_id[op_id].get("requestBody", {}).get("content", {}).get("application/json", {})
        examples = media.get("examples", {})
        if not examples:
            failures.append(f"{op_id}: no request body examples")
        for name, example in examples.items():
            if not example.get("summary") or "value" not in example:
                failures.append(f"{op_id}: example {name!r} needs a summary and a value")
    assert not failures, _problems(failures)


@services
def test_every_request_body_example_matches_its_schema(
    service: str, schemas: dict[str, dict[str, Any]]
) -> None:
    schema = schemas[service]
    failures = []
    checked = 0
    for where, operation in _operations(schema):
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            validator = _validator(schema, media["schema"])
            for name, example in media.get("examples", {}).items():
                checked += 1
                errors = [e.message for e in validator.iter_errors(example["value"])]
                if errors:
                    failures.append(f"{where}: {media_type} example {name!r}: {errors}")
    assert not failures, _problems(failures)
    assert checked >= len(MAIN_REQUEST_BODIES[service])


# --- a valid OpenAPI 3.1 document -----------------------------------------------------------


@services
def test_the_schema_is_a_valid_openapi_3_1_document(
    service: str, schemas: dict[str, dict[str, Any]]
) -> None:
    schema = schemas[service]
    validate_openapi(schema)  # openapi-spec-validator (a dev dependency): the full check
    assert re.match(r"^3\.1\.\d+$", schema["openapi"])
    assert schema["info"]["title"]
    assert schema["info"]["version"]
    failures = []
    for path, item in schema["paths"].items():
        if not path.startswith("/"):
            failures.append(f"{path}: does not start with /")
        templated = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            if method not in HTTP_METHODS:
                failures.append(f"{where}: not an HTTP method")
                continue
            parameters = operation.get("parameters", [])
            in_path = {p["name"] for p in parameters if p["in"] == "path"}
            if in_path != templated:
                failures.append(f"{where}: path parameters {in_path} != {templated}")
            for parameter in parameters:
                if parameter["in"] not in {"path", "query", "header", "cookie"}:
                    failures.append(f"{where}: parameter {parameter['name']} in {parameter['in']}")
                if parameter["in"] == "path" and parameter.get("required") is not True:
                    failures.append(f"{where}: path parameter {parameter['name']} not required")
                if "schema" not in parameter and "content" not in parameter:
                    failures.append(f"{where}: parameter {parameter['name']} without a schema")
            if not operation.get("responses"):
                failures.append(f"{where}: no responses")
            for status, response in operation.get("responses", {}).items():
                if not STATUS_KEY.match(status):
                    failures.append(f"{where}: response key {status!r}")
                if "description" not in response:
                    failures.append(f"{where}: {status} without a description (required)")
    for ref in sorted(_refs(schema)):
        if not ref.startswith("#/") or _resolve(schema, ref) is None:
            failures.append(f"unresolvable $ref {ref}")
    for name, component in schema["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(component)
        except jsonschema.SchemaError as exc:
            failures.append(f"components/schemas/{name}: {exc.message}")
    assert not failures, _problems(failures)


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A JSON Schema 2020-12 validator of ``schema`` whose ``#/components/...`` refs resolve
    in ``document`` (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""
    rooted = {**schema, "components": document["components"]}
    return jsonschema.Draft202012Validator(rooted)


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "$ref" and isinstance(child, str):
                yield child
            else:
                yield from _refs(child)
    elif isinstance(value, list):
        for child in value:
            yield from _refs(child)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# --- input bounds ---------------------------------------------------------------------------

# String formats pydantic parses with bounded parsers: an over-long value is a 422 at once.
BOUNDED_STRING_FORMATS = {"date-time", "date", "time", "uuid", "binary"}
# Bodies read raw by their route, bounded by size and checked for nesting there.
RAW_BODIES = {("pipeline", "receive_github_webhook")}
# Free-form JSON values (an audit event's `data`) have no strings or arrays in their schema
# to check: the body size and the JSON depth limit bound them.


def _unbounded(node: Any, where: str, document: dict[str, Any], seen: set[str]) -> Iterator[str]:
    """Places in a request schema where a string has no maxLength or an array no maxItems
    (following ``$ref`` into components once each)."""
    if isinstance(node, list):
        for child in node:
            yield from _unbounded(child, where, document, seen)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            yield from _unbounded(_resolve(document, ref), name, document, seen)
        return
    kind = node.get("type")
    if kind == "string" and not (
        "maxLength" in node
        or "enum" in node
        or "const" in node
        or node.get("format") in BOUNDED_STRING_FORMATS
    ):
        yield f"{where}: string without maxLength"
    if kind == "array" and "maxItems" not in node:
        yield f"{where}: array without maxItems"
    for key, child in node.items():
        if key == "properties":
            for prop, schema in child.items():
                yield from _unbounded(schema, f"{where}.{prop}", document, seen)
        elif key not in ("examples", "example", "default"):
            yield from _unbounded(child, where, document, seen)


@services
def test_every_request_input_is_bounded(service: str, schemas: dict[str, dict[str, Any]]) -> None:
    """Every string a client sends has a maxLength and every array a maxItems (body fields
    and query/path parameters), so an over-long value is a 422, never a database error;
    the body-size, JSON-depth and header limits bound the rest (README: Input limits)."""
    schema = schemas[service]
    failures = []
    for where, operation in _operations(schema):
        op_id = operation["operationId"]
        for parameter in operation.get("parameters", []):
            if parameter["in"] not in ("query", "path"):
                continue  # headers: bounded by the server's request-head limit
            name = f"{where} {parameter['in']} parameter {parameter['name']}"
            failures.extend(_unbounded(parameter.get("schema", {}), name, schema, set()))
        body = operation.get("requestBody")
        if body is None or (service, op_id) in RAW_BODIES:
            continue
        for media in body.get("content", {}).values():
            failures.extend(_unbounded(media.get("schema", {}), f"{where} body", schema, set()))
    assert not failures, _problems(failures)


def test_the_input_bounds_check_finds_unbounded_fields() -> None:
    document: dict[str, Any] = {
        "components": {
            "schemas": {
                "Thing": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}},
                        "at": {"type": "string", "format": "date-time"},
                        "note": {"anyOf": [{"type": "string", "maxLength": 9}, {"type": "null"}]},
                    },
                }
            }
        }
    }
    found = list(_unbounded({"$ref": "#/components/schemas/Thing"}, "body", document, set()))
    assert found == ["Thing.name: string without maxLength", "Thing.tags: array without maxItems"]
