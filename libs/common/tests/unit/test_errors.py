"""Every error a service returns is an RFC 9457 problem (application/problem+json)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from flightdeck_common.devstack.ports import free_port
from flightdeck_common.errors import (
    PROBLEM_JSON,
    PROBLEM_TYPE_PREFIX,
    BadRequest,
    Conflict,
    FlightdeckError,
    Forbidden,
    InvalidCursor,
    NotFound,
    PayloadTooLarge,
    Problem,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    problem_response,
    problem_responses,
)
from flightdeck_common.logging import request_id_var
from flightdeck_common.middleware.security_headers import API_CSP

LEAKY_MESSAGE = "db password is hunter2 at /srv/secret/path"


class Teapot(FlightdeckError):
    status_code = 418
    code = "teapot"
    title = "I am a teapot"


ERRORS: dict[str, type[FlightdeckError]] = {
    cls.__name__: cls
    for cls in (
        BadRequest,
        InvalidCursor,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        RateLimited,
        ServiceUnavailable,
        Teapot,
    )
}


class ItemCreate(BaseModel):
    name: str = Field(min_length=1)
    size: int


router = APIRouter(prefix="/things")


@router.get("/errors/{error_name}")
async def raise_named_error(error_name: str) -> dict[str, str]:
    """Raise the FlightdeckError subclass called ``error_name``."""
    raise ERRORS[error_name](f"{error_name} happened")


@router.get("/error-with-extras")
async def raise_error_with_extras() -> dict[str, str]:
    """Raise an error carrying extra members and headers."""
    raise Conflict(
        "run 7 already exists",
        headers={"Location": "/things/7", "X-Extra": "yes"},
        existing_id=7,
        hints=["use PATCH"],
    )


@router.get("/error-without-detail")
async def raise_error_without_detail() -> dict[str, str]:
    """Raise an error without a detail."""
    raise Forbidden()


@router.get("/http-error")
async def raise_http_error() -> dict[str, str]:
    """Raise a plain HTTPException with a custom detail and header."""
    raise HTTPException(
        status_code=401, detail="token expired", headers={"WWW-Authenticate": "Bearer"}
    )


@router.post("/items", status_code=201)
async def create_item(item: ItemCreate) -> ItemCreate:
    """Echo a validated body."""
    return item


@router.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    """Echo a validated path parameter."""
    return {"item_id": item_id}


@router.get("/boom")
async def explode() -> dict[str, str]:
    """Fail with an unexpected exception."""
    raise RuntimeError(LEAKY_MESSAGE)


@router.get("/database-down")
async def database_down() -> dict[str, str]:
    """Fail like a database that cannot be reached."""
    raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError(LEAKY_MESSAGE))


@router.get("/dependency-down")
async def dependency_down() -> dict[str, str]:
    """Fail like a service that cannot be reached."""
    raise ConnectionRefusedError(LEAKY_MESSAGE)


@router.get("/postgres-down")
async def postgres_down() -> dict[str, str]:
    """Connect to a PostgreSQL port nobody listens on (asyncpg raises a bare OSError)."""
    engine = create_async_engine(f"postgresql+asyncpg://u:p@127.0.0.1:{free_port()}/db")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    return {}


@router.get("/redis-down")
async def redis_down() -> dict[str, str]:
    """Fail like a Redis command whose server is down."""
    raise RedisConnectionError(f"Error 111 connecting to 127.0.0.1:6379. {LEAKY_MESSAGE}")


@router.get("/redis-bug")
async def redis_bug() -> dict[str, str]:
    """Fail like a malformed Redis command (a bug, not an outage)."""
    raise RedisResponseError("WRONGTYPE Operation against a key holding the wrong kind")


@pytest.fixture
async def client(start_service: Any) -> Any:
    return (await start_service(router)).client


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The common problem+json contract; returns the body for further checks."""
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == PROBLEM_TYPE_PREFIX + code
    assert isinstance(body["title"], str)
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    Problem.model_validate(body)
    return body


# --- FlightdeckError subclasses ------------------------------------------------------------


@pytest.mark.parametrize("error_name", sorted(ERRORS))
async def test_flightdeck_errors_render_their_status_code_and_title(
    client: Any, error_name: str
) -> None:
    error = ERRORS[error_name]
    response = await client.get(f"/things/errors/{error_name}")
    body = assert_problem(response, error.status_code, error.code)
    assert body["title"] == error.title
    assert body["detail"] == f"{error_name} happened"
    assert body["instance"] == f"/things/errors/{error_name}"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequest, 400),
        (InvalidCursor, 400),
        (Unauthorized, 401),
        (Forbidden, 403),
        (NotFound, 404),
        (Conflict, 409),
        (PayloadTooLarge, 413),
        (RateLimited, 429),
        (ServiceUnavailable, 503),
    ],
)
def test_error_status_codes(error: type[FlightdeckError], status: int) -> None:
    assert error.status_code == status


def test_subclass_codes_are_unique() -> None:
    codes = [error.code for error in ERRORS.values()]
    assert len(codes) == len(set(codes))


async def test_extra_members_and_headers_are_sent(client: Any) -> None:
    response = await client.get("/things/error-with-extras")
    body = assert_problem(response, 409, "conflict")
    assert body["existing_id"] == 7
    assert body["hints"] == ["use PATCH"]
    assert response.headers["location"] == "/things/7"
    assert response.headers["x-extra"] == "yes"


async def test_error_without_detail_has_no_detail_member(client: Any) -> None:
    response = await client.get("/things/error-without-detail")
    body = assert_problem(response, 403, "forbidden")
    assert "detail" not in body


def test_error_message_defaults_to_title() -> None:
    assert str(NotFound()) == NotFound.title
    assert str(NotFound("run 3 not found")) == "run 3 not found"


# --- framework errors ----------------------------------------------------------------------


async def test_unknown_path_is_a_404_problem(client: Any) -> None:
    response = await client.get("/things/does/not/exist")
    body = assert_problem(response, 404, "not_found")
    assert body["title"] == "Not Found"
    assert body["instance"] == "/things/does/not/exist"


async def test_wrong_method_is_a_405_problem_with_allow(client: Any) -> None:
    response = await client.delete("/things/items")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_http_exception_keeps_detail_and_headers(client: Any) -> None:
    response = await client.get("/things/http-error")
    body = assert_problem(response, 401, "unauthorized")
    assert body["detail"] == "token expired"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_malformed_json_is_a_400_invalid_json(client: Any) -> None:
    response = await client.post(
        "/things/items", content=b'{"name": "a",', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 400, "invalid_json")
    assert body["errors"]
    assert all(issue["type"] == "json_invalid" for issue in body["errors"])


async def test_schema_invalid_json_is_a_422_with_errors(client: Any) -> None:
    response = await client.post("/things/items", json={"name": "", "size": "large"})
    body = assert_problem(response, 422, "validation_failed")
    issues = {tuple(issue["loc"]): issue for issue in body["errors"]}
    assert set(issues) == {("body", "name"), ("body", "size")}
    for issue in body["errors"]:
        assert set(issue) == {"loc", "msg", "type"}
        assert isinstance(issue["msg"], str)
        assert issue["msg"]
    assert issues[("body", "name")]["type"] == "string_too_short"
    assert issues[("body", "size")]["type"] == "int_parsing"
    assert "2" in body["detail"]


async def test_missing_body_is_a_422(client: Any) -> None:
    response = await client.post("/things/items")
    body = assert_problem(response, 422, "validation_failed")
    assert [issue["type"] for issue in body["errors"]] == ["missing"]


async def test_invalid_path_parameter_is_a_422_with_location(client: Any) -> None:
    response = await client.get("/things/items/abc")
    body = assert_problem(response, 422, "validation_failed")
    assert body["errors"][0]["loc"] == ["path", "item_id"]


async def test_valid_request_is_not_a_problem(client: Any) -> None:
    response = await client.post("/things/items", json={"name": "a", "size": 2})
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"name": "a", "size": 2}


# --- outages and unexpected exceptions ------------------------------------------------------


async def test_unexpected_exception_is_an_opaque_500(client: Any) -> None:
    response = await client.get("/things/boom", headers={"X-Request-ID": "trace-500"})
    body = assert_problem(response, 500, "internal_error")
    assert body["request_id"] == "trace-500"
    assert body["instance"] == "/things/boom"
    for secret in ("hunter2", "/srv/secret/path", "RuntimeError", "Traceback"):
        assert secret not in response.text
    assert response.headers["x-request-id"] == "trace-500"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == API_CSP


async def test_unexpected_exception_is_logged_with_request_id(
    client: Any, json_logs: list[dict[str, Any]]
) -> None:
    response = await client.get("/things/boom")
    errors = [line for line in json_logs if line["logger"] == "flightdeck.errors"]
    assert len(errors) == 1
    assert errors[0]["level"] == "error"
    assert errors[0]["request_id"] == response.headers["x-request-id"]
    assert LEAKY_MESSAGE in errors[0]["exception"]  # logged for operators, not sent to clients


async def test_database_outage_is_a_503_with_retry_after(client: Any) -> None:
    response = await client.get("/things/database-down")
    body = assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "5"
    assert "hunter2" not in response.text
    assert "SELECT" not in body["detail"]


async def test_postgres_that_refuses_connections_is_named_as_the_database(client: Any) -> None:
    # Regression: asyncpg's refused connect is a plain OSError, which read as "a service
    # this request needs" instead of the database.
    response = await client.get("/things/postgres-down")
    body = assert_problem(response, 503, "database_unavailable")
    assert "database" in body["detail"]


async def test_redis_outage_is_a_503_not_a_500(client: Any) -> None:
    # Regression: a Redis write without fallback (auth's logout mirrors the revocation to
    # Redis) answered an opaque 500 while Redis was down.
    response = await client.get("/things/redis-down")
    assert_problem(response, 503, "dependency_unavailable")
    assert response.headers["retry-after"] == "5"
    assert "hunter2" not in response.text


async def test_other_redis_errors_are_bugs(client: Any) -> None:
    assert_problem(await client.get("/things/redis-bug"), 500, "internal_error")


async def test_dependency_outage_is_a_503(client: Any) -> None:
    response = await client.get("/things/dependency-down")
    assert_problem(response, 503, "dependency_unavailable")
    assert response.headers["retry-after"] == "5"
    assert "hunter2" not in response.text


# --- building blocks -------------------------------------------------------------------------


def test_problem_response_derives_code_and_title_from_status() -> None:
    response = problem_response(422)
    assert response.status_code == 422
    assert response.media_type == PROBLEM_JSON
    body = Problem.model_validate_json(response.body)
    assert body.title in ("Unprocessable Content", "Unprocessable Entity")
    # The code is stable across Python versions even though the phrase is not.
    assert body.code == "validation_failed"


@pytest.mark.parametrize(
    ("status", "code"),
    [(413, "payload_too_large"), (405, "method_not_allowed"), (418, "i'm_a_teapot")],
)
def test_problem_codes_are_stable(status: int, code: str) -> None:
    assert Problem.model_validate_json(problem_response(status).body).code == code


def test_extension_members_cannot_override_standard_ones() -> None:
    body = Problem.model_validate_json(
        problem_response(
            409, code="conflict", extra={"status": 200, "code": "ok", "hint": "x"}
        ).body
    )
    assert (body.status, body.code) == (409, "conflict")
    assert body.model_extra == {"hint": "x"}
    assert body.detail is None
    assert body.request_id is None


def test_problem_response_for_unknown_status() -> None:
    body = Problem.model_validate_json(problem_response(599).body)
    assert (body.status, body.title, body.code) == (599, "Error", "error")


def test_problem_response_includes_request_id_from_context() -> None:
    token = request_id_var.set("ctx-id-1")
    try:
        body = Problem.model_validate_json(problem_response(404).body)
    finally:
        request_id_var.reset(token)
    assert body.request_id == "ctx-id-1"


def test_to_response_outside_a_request_has_no_instance() -> None:
    response = NotFound("gone", run_id=3).to_response()
    body = Problem.model_validate_json(response.body)
    assert body.instance is None
    assert body.model_extra == {"run_id": 3}


def test_problem_responses_builds_openapi_entries() -> None:
    responses = problem_responses(NotFound, Conflict, BadRequest, InvalidCursor)
    assert set(responses) == {404, 409, 400}
    for entry in responses.values():
        assert entry["model"] is Problem
    assert responses[404]["description"] == "Not Found"
    assert responses[400]["description"] == "Bad Request / Invalid pagination cursor"


def test_problem_responses_does_not_repeat_titles() -> None:
    responses = problem_responses(NotFound, NotFound)
    assert responses[404]["description"] == "Not Found"


def test_problem_responses_calls_do_not_share_state() -> None:
    first = problem_responses(BadRequest, InvalidCursor)
    second = problem_responses(BadRequest)
    assert second[400]["description"] == "Bad Request"
    assert first[400] is not second[400]


# --- problems in the OpenAPI schema ----------------------------------------------------------

documented = APIRouter(prefix="/things")


@documented.get("/documented/{item_id}", responses=problem_responses(NotFound, Conflict))
async def read_documented_item(item_id: int) -> dict[str, int]:
    """Read an item whose errors are declared."""
    return {"item_id": item_id}


def test_problem_responses_appear_in_openapi(build_app: Any) -> None:
    schema = build_app(documented).openapi()
    responses = schema["paths"]["/things/documented/{item_id}"]["get"]["responses"]
    assert responses["404"]["description"] == "Not Found"
    assert responses["409"]["description"] == "Conflict"
    assert PROBLEM_JSON in responses["404"]["content"]
    assert "Problem" in schema["components"]["schemas"]


def test_problem_responses_document_the_problem_schema_under_problem_json(
    build_app: Any,
) -> None:
    schema = build_app(documented).openapi()
    content = schema["paths"]["/things/documented/{item_id}"]["get"]["responses"]["404"]["content"]
    assert content[PROBLEM_JSON].get("schema") == {"$ref": "#/components/schemas/Problem"}
    assert "application/json" not in content


def test_validation_error_response_is_documented_as_a_problem(build_app: Any) -> None:
    schema = build_app(documented).openapi()
    responses = schema["paths"]["/things/documented/{item_id}"]["get"]["responses"]
    assert responses["422"]["content"] == {
        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]


# --- CatchAllMiddleware on its own -----------------------------------------------------------


async def _drive_catch_all(app: Any) -> list[dict[str, Any]]:
    from flightdeck_common.middleware.catch_all import CatchAllMiddleware

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    await CatchAllMiddleware(app)(scope, receive, send)
    return sent


async def test_catch_all_turns_an_early_failure_into_a_500() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError(LEAKY_MESSAGE)

    sent = await _drive_catch_all(failing)
    assert sent[0]["status"] == 500
    body = Problem.model_validate_json(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body.code == "internal_error"
    assert body.instance == "/x"
    assert "hunter2" not in str(body.model_dump())


async def test_catch_all_reraises_once_the_response_started() -> None:
    async def fails_mid_stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise KeyError("mid-stream")

    with pytest.raises(KeyError, match="mid-stream"):
        await _drive_catch_all(fails_mid_stream)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_served_schema_documents_problems_and_every_ref_resolves(
    start_service: Any,
) -> None:
    service = await start_service(router, documented)
    schema = (await service.client.get("/things/openapi.json")).json()
    components = schema["components"]["schemas"]
    refs = _refs(schema)
    assert "#/components/schemas/Problem" in refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in components, ref
    create = schema["paths"]["/things/items"]["post"]["responses"]
    assert set(create["422"]["content"]) == {PROBLEM_JSON}
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert set(response.get("content", {})) == {PROBLEM_JSON}, code
    # The served schema is the documented one.
    assert schema == service.app.openapi()
