"""OpenAPI post-processing: document errors as they are served (problem+json)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from flightdeck_common.errors import PROBLEM_JSON, Problem

PROBLEM_REF = "#/components/schemas/Problem"


def document_problems(app: FastAPI) -> None:
    """Make the schema say what the service does: every error is ``application/problem+json``.

    FastAPI documents declared error models under ``application/json`` and validation
    errors as its own ``HTTPValidationError``; both are rewritten to the Problem schema.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        _rewrite(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _rewrite(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in problem_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["Problem"] = problem_schema

    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            _declare_generic_errors(operation)
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                json_schema = content.get("application/json", {}).get("schema", {})
                ref = json_schema.get("$ref", "")
                if ref == PROBLEM_REF or (status == "422" and ref.endswith("/HTTPValidationError")):
                    content.pop("application/json")
                    content[PROBLEM_JSON] = {"schema": {"$ref": PROBLEM_REF}}
                    if status == "422":
                        response["description"] = "Validation failed"
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    }


def _declare_generic_errors(operation: dict[str, Any]) -> None:
    """Errors every operation of a kind can answer, whether or not its route lists them:
    a body can be malformed JSON; a secured route can refuse the token or the role."""
    responses = operation.setdefault("responses", {})
    if "requestBody" in operation:
        responses.setdefault("400", _problem("Malformed request body"))
    if operation.get("security"):
        responses.setdefault("401", _problem("Missing, invalid, expired or revoked token"))
        responses.setdefault("403", _problem("Token lacks the required role or audience"))
