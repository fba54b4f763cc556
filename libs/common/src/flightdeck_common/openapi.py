"""OpenAPI post-processing: document errors as they are served (problem+json).

Every operation of a Flightdeck service gets, besides the errors its route declares:

- 413 (body over the limit) and 408 (body stalled) when it takes a body, 400 (malformed
  or too deeply nested JSON) when FastAPI parses that body, 422 (validation) when it takes a body or parameters;
- 401 when it has a security requirement;
- 500 (unexpected error) and 503 (database or another dependency unreachable) always;
- ``security: []`` when it is public, so "public" is said rather than implied.

Errors are documented as ``application/problem+json`` with the ``Problem`` schema; where a
response lists examples (one per problem ``code``), the generic problems of that status are
added to them so the examples stay complete.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, routing

from flightdeck_common.errors import PROBLEM_JSON, Problem, problem_example

PROBLEM_REF = "#/components/schemas/Problem"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

_VALIDATION_EXAMPLE = problem_example(
    422,
    "validation_failed",
    "Validation failed",
    {
        "detail": "1 field(s) failed validation.",
        "errors": [
            {
                "loc": ["query", "limit"],
                "msg": "Input should be less than or equal to 200",
                "type": "less_than_equal",
            }
        ],
    },
)


def _generic(
    status: int, code: str, title: str, description: str
) -> tuple[str, str, dict[str, Any]]:
    return str(status), description, problem_example(status, code, title)


MALFORMED_JSON = _generic(
    400,
    "invalid_json",
    "Malformed JSON body",
    "Malformed JSON body, or one nested too deeply (`json_too_deep`)",
)
MALFORMED_FORM = _generic(400, "bad_request", "Bad Request", "Malformed form body")
BODY_TOO_LARGE = _generic(413, "payload_too_large", "Payload Too Large", "Request body too large")
BODY_TIMEOUT = _generic(
    408, "request_timeout", "Request Timeout", "The request body stalled (connection closed)"
)
VALIDATION_FAILED = ("422", "Validation failed", _VALIDATION_EXAMPLE)
INVALID_TOKEN = _generic(
    401, "invalid_token", "Invalid token", "Missing, invalid, expired or revoked token"
)
INTERNAL_ERROR = _generic(
    500, "internal_error", "Internal Server Error", "Unexpected error (logged, never detailed)"
)
DATABASE_UNAVAILABLE = _generic(
    503,
    "database_unavailable",
    "Database unavailable",
    "The database (`database_unavailable`) or another dependency such as Redis "
    "(`dependency_unavailable`) cannot be reached; retry after `Retry-After` seconds",
)


def document_problems(app: FastAPI) -> None:
    """Make the schema say what the service does: every error is ``application/problem+json``.

    FastAPI documents declared error models under ``application/json`` and validation
    errors as its own ``HTTPValidationError``; both are rewritten to the Problem schema,
    and the generic errors (see the module docstring) are declared on every operation.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        # FastAPI shares nested dicts of ``responses=`` constants with the schema it
        # builds: rewrite a copy, or the next app built from the same routers would differ.
        schema = copy.deepcopy(build())
        parsed_bodies = {
            route.unique_id for route in documented_routes(app) if route.body_field is not None
        }
        _rewrite(schema, parsed_bodies)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def documented_routes(app: FastAPI) -> list[routing.RouteContext]:
    """The API routes of ``app`` in its schema, as FastAPI sees them once routers are
    included: ``unique_id`` is the operation id, ``dependant`` the route's dependencies."""
    return [
        context
        for context in routing.iter_route_contexts(app.routes)
        if isinstance(context.original_route, routing.APIRoute) and context.include_in_schema
    ]


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation of an OpenAPI document."""
    return [
        (method, path, operation)
        for path, item in schema.get("paths", {}).items()
        for method, operation in item.items()
        if method in HTTP_METHODS and isinstance(operation, dict)
    ]


def _rewrite(schema: dict[str, Any], parsed_bodies: set[str]) -> None:
    """Rewrite ``schema`` in place; ``parsed_bodies`` are the operation ids whose body
    FastAPI parses (others, like a webhook checking a signature first, read it raw)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in problem_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["Problem"] = problem_schema

    for _, _, operation in operations(schema):
        operation.setdefault("security", [])
        for status, response in operation.get("responses", {}).items():
            content = response.get("content", {})
            json_media = content.get("application/json", {})
            ref = json_media.get("schema", {}).get("$ref", "")
            if ref == PROBLEM_REF or (status == "422" and ref.endswith("/HTTPValidationError")):
                problem_media: dict[str, Any] = {"schema": {"$ref": PROBLEM_REF}}
                if json_media.get("examples"):
                    problem_media["examples"] = json_media["examples"]
                response["content"] = {
                    **{k: v for k, v in content.items() if k != "application/json"},
                    PROBLEM_JSON: problem_media,
                }
                if status == "422" and ref.endswith("/HTTPValidationError"):
                    response["description"] = "Validation failed"
        _declare_generic_errors(operation, operation.get("operationId") in parsed_bodies)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def _generic_problems(
    operation: dict[str, Any], parses_body: bool
) -> list[tuple[str, str, dict[str, Any]]]:
    problems = []
    body_types = operation.get("requestBody", {}).get("content", {})
    if parses_body and "application/json" in body_types:
        problems.append(MALFORMED_JSON)
    elif parses_body:
        problems.append(MALFORMED_FORM)
    if body_types:
        problems.extend([BODY_TOO_LARGE, BODY_TIMEOUT])
    if body_types or operation.get("parameters"):
        problems.append(VALIDATION_FAILED)
    if operation.get("security"):
        problems.append(INVALID_TOKEN)
    return [*problems, INTERNAL_ERROR, DATABASE_UNAVAILABLE]


def _declare_generic_errors(operation: dict[str, Any], parses_body: bool) -> None:
    """Add the errors every operation of a kind can answer, whether or not its route
    lists them; merge them into a declared response of the same status."""
    responses = operation.setdefault("responses", {})
    for status, description, example in _generic_problems(operation, parses_body):
        response = responses.get(status)
        if response is None:
            responses[status] = {
                "description": description,
                "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
            }
            continue
        media = response.get("content", {}).get(PROBLEM_JSON)
        if media is None:
            continue  # not a problem response (a route documenting its own)
        code = example["value"]["code"]
        examples = media.get("examples")
        if examples is not None and code not in examples:
            examples[code] = example
            if example["summary"] not in response["description"]:
                response["description"] += f" / {example['summary']}"
