"""RFC 9457 problem details for every error a service returns.

Domain code raises subclasses of :class:`FlightdeckError`; ``install_error_handlers``
renders them, HTTP errors, validation errors, database outages and unexpected
exceptions as ``application/problem+json``.
"""

from __future__ import annotations

import logging
import socket
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from flightdeck_common.logging import request_id_var

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:flightdeck:problem:"
RESERVED_MEMBERS = frozenset(
    {"type", "title", "status", "code", "detail", "instance", "request_id"}
)
# Stable codes for plain HTTP errors (status phrases differ between Python versions).
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

logger = logging.getLogger(__name__)


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """Problem details (RFC 9457) as served by every Flightdeck endpoint."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:flightdeck:problem:not_found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str | None = None
    instance: str | None = None
    code: str = Field(examples=["not_found"], description="Stable machine-readable error code.")
    request_id: str | None = None
    errors: list[ValidationIssue] | None = None


def problem_response(
    status: int,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """Build an ``application/problem+json`` response."""
    phrase = _phrase(status)
    code = code or STATUS_CODES.get(status) or phrase.lower().replace(" ", "_").replace("-", "_")
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title or phrase,
        "status": status,
        "code": code,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    if extra:
        # Extension members never override the standard ones.
        body.update({k: v for k, v in extra.items() if k not in RESERVED_MEMBERS})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class FlightdeckError(Exception):
    """Base of all domain errors: subclasses carry their status and code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal Server Error"
    # Extension members the error carries (``mfa_token``, ``retry_after`` ...), with sample
    # values: shown in the OpenAPI example of the error so clients know to look for them.
    example_members: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def to_response(self, request: Request | None = None) -> JSONResponse:
        return problem_response(
            self.status_code,
            code=self.code,
            title=self.title,
            detail=self.detail,
            instance=request.url.path if request is not None else None,
            headers=self.headers,
            extra=self.extra,
        )


class BadRequest(FlightdeckError):
    status_code = 400
    code = "bad_request"
    title = "Bad Request"


class JsonTooDeep(BadRequest):
    code = "json_too_deep"
    title = "JSON nested too deeply"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    title = "Invalid pagination cursor"


class Unauthorized(FlightdeckError):
    status_code = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(FlightdeckError):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(FlightdeckError):
    status_code = 404
    code = "not_found"
    title = "Not Found"


class RequestTimeout(FlightdeckError):
    status_code = 408
    code = "request_timeout"
    title = "Request Timeout"


class Conflict(FlightdeckError):
    status_code = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(FlightdeckError):
    status_code = 413
    code = "payload_too_large"
    title = "Payload Too Large"


class RateLimited(FlightdeckError):
    status_code = 429
    code = "rate_limited"
    title = "Too Many Requests"


class ServiceUnavailable(FlightdeckError):
    status_code = 503
    code = "service_unavailable"
    title = "Service Unavailable"


def problem_example(
    status: int, code: str, title: str, members: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An OpenAPI Example Object of the problem a client receives for ``code``."""
    value: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "code": code,
    }
    value.update(members or {})
    return {"summary": title, "value": value}


def problem_responses(*errors: type[FlightdeckError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given error classes.

    One entry per status: its description lists the titles, its examples (keyed by the
    problem ``code``) show each problem a client can get with that status.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        # Declared under application/json by FastAPI; flightdeck_common.openapi moves it.
        entry = responses.setdefault(
            error.status_code,
            {
                "model": Problem,
                "description": error.title,
                "content": {"application/json": {"examples": {}}},
            },
        )
        if error.title not in entry["description"]:
            entry["description"] += f" / {error.title}"
        entry["content"]["application/json"]["examples"].setdefault(
            error.code,
            problem_example(error.status_code, error.code, error.title, error.example_members),
        )
    return responses


def _validation_issues(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]


async def _flightdeck_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FlightdeckError)
    if exc.status_code >= 500:
        logger.warning("request failed: %s", exc, extra={"code": exc.code})
    return exc.to_response(request)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == _phrase(exc.status_code):
        detail = None
    return problem_response(
        exc.status_code,
        detail=detail,
        instance=request.url.path,
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    issues = _validation_issues(exc)
    if issues and all(i["type"] == "json_invalid" for i in issues):
        return problem_response(
            400,
            code="invalid_json",
            title="Malformed JSON body",
            detail="The request body is not valid JSON.",
            instance=request.url.path,
            extra={"errors": issues},
        )
    return problem_response(
        422,
        code="validation_failed",
        title="Validation failed",
        detail=f"{len(issues)} field(s) failed validation.",
        instance=request.url.path,
        extra={"errors": issues},
    )


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means a dependency cannot be reached (not a bug in the request)."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if orig is not None and is_connection_failure(orig):
            return True
        text = str(orig).lower()
        # SQLite's busy database and asyncpg's closed/refused connections.
        return "database is locked" in text or ("connection" in text and "closed" in text)
    if isinstance(exc, sa_exc.TimeoutError):  # connection pool exhausted
        return True
    # Redis down: what has no in-process fallback (revocation writes) fails the request.
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return True
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    cause = exc.__cause__
    if cause is not None and cause is not exc and is_connection_failure(cause):
        return True
    # asyncpg raises a bare OSError("Multiple exceptions: [Errno 111] ...") when every
    # address of the host refuses the connection.
    return type(exc) is OSError and "connect call failed" in str(exc).lower()


# Modules whose frames in a traceback mean the error came up through the database layer.
_DATABASE_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.")


def raised_by_database(exc: BaseException) -> bool:
    """Whether ``exc`` is a database error or came up through SQLAlchemy or its driver.

    A PostgreSQL server that is down surfaces as asyncpg's bare ``OSError`` ("Connect call
    failed") out of SQLAlchemy's pool, not as a ``DBAPIError``: only the traceback tells it
    from a failed call to another service.
    """
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return True
    frame = exc.__traceback__
    while frame is not None:
        if str(frame.tb_frame.f_globals.get("__name__", "")).startswith(_DATABASE_MODULES):
            return True
        frame = frame.tb_next
    return False


async def _outage_or_bug(request: Request, exc: Exception) -> JSONResponse:
    if not is_connection_failure(exc):
        logger.exception("unhandled error", exc_info=exc)
        return internal_error_response(request.url.path)
    is_database = raised_by_database(exc)
    logger.error("%s unavailable: %r", "database" if is_database else "dependency", exc)
    return problem_response(
        503,
        code="database_unavailable" if is_database else "dependency_unavailable",
        title="Database unavailable" if is_database else "Dependency unavailable",
        detail=(
            "The database cannot be reached right now; retry later."
            if is_database
            else "A service this request needs cannot be reached right now; retry later."
        ),
        instance=request.url.path,
        headers={"Retry-After": "5"},
    )


def internal_error_response(path: str | None = None) -> JSONResponse:
    """The 500 problem returned for unexpected exceptions (no internals leaked)."""
    return problem_response(
        500,
        code="internal_error",
        detail="An unexpected error occurred; it has been logged.",
        instance=path,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app can produce as problem+json."""
    app.add_exception_handler(FlightdeckError, _flightdeck_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Connection-level failures (server down, pool exhausted) are outages, not bugs.
    # Outages (server down, pool exhausted, connection lost) are 503s; other database or
    # OS errors are bugs and become the opaque 500.
    app.add_exception_handler(sa_exc.DBAPIError, _outage_or_bug)
    app.add_exception_handler(sa_exc.TimeoutError, _outage_or_bug)
    app.add_exception_handler(OSError, _outage_or_bug)
    app.add_exception_handler(RedisError, _outage_or_bug)
    # Anything else is caught by CatchAllMiddleware, inside our own middleware stack, so
    # even a 500 carries the request id and security headers.
