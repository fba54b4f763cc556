"""A small client of auth's internal API (``/auth/internal/users``), with a service token.

Every call carries this service's token for ``flightdeck:auth-users``; a 401 drops the
cached token and retries once with a new one. Auth being unreachable, answering 5xx or
something unreadable, or this service lacking credentials is ``AuthUnavailable`` (503 with
Retry-After); its subclass ``AuthAnswerLost`` says the request may have taken effect at
auth anyway (sent, but no usable answer came back). Auth's own 4xx problems (user not
found, username taken, last admin, validation) reach our caller with the same status,
code and detail.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, TypeVar

import httpx
from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from flightdeck_common.auth.claims import Role
from flightdeck_common.auth.errors import AuthUnavailable
from flightdeck_common.auth.service_tokens import ServiceCredentialsRejected, TokenProvider
from flightdeck_common.dependencies import inline
from flightdeck_common.errors import FlightdeckError, problem_response
from flightdeck_common.logging import request_id_var
from flightdeck_common.pagination import Page
from flightdeck_common.user_errors import (
    USER_DIRECTORY_PROBLEMS,
    ActingAdminRequired,
    InvalidSignedApproval,
    SignedApprovalRequired,
)

logger = logging.getLogger(__name__)

USERS_PATH = "/auth/internal/users"
_ModelT = TypeVar("_ModelT", bound=BaseModel)


class AuthUser(BaseModel):
    """A user as auth's internal API describes it."""

    id: int
    username: str
    role: Role
    is_active: bool
    mfa_enabled: bool
    has_approval_key: bool = False
    approval_key_fingerprint: str | None = None
    created_at: datetime
    last_login_at: datetime | None = None


class ApprovalKey(BaseModel):
    """A user's registered approval public key."""

    user_id: int
    algorithm: str
    fingerprint: str
    public_key_pem: str
    updated_at: datetime


class AuthAnswerLost(AuthUnavailable):
    """503 where the request may have reached auth and taken effect: the connection broke
    or timed out after sending, or auth failed (5xx) while handling it."""


# Errors raised before a request leaves: auth certainly did not act on it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# Auth's problem codes we act on, raised as our own classes (same status, code and title).
_KNOWN_PROBLEMS: dict[str, type[FlightdeckError]] = {
    cls.code: cls for cls in USER_DIRECTORY_PROBLEMS
}


# 403s of auth's that are about the request, not about this service's token.
_PASSED_ON_403 = frozenset(
    {SignedApprovalRequired.code, InvalidSignedApproval.code, ActingAdminRequired.code}
)


def _problem_code(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


class AuthRejected(FlightdeckError):
    """Any other 4xx problem of auth's, passed on as auth answered it."""

    status_code = 400
    code = "auth_rejected"
    title = "Rejected by the auth service"

    def __init__(
        self, status: int, code: str, title: str, detail: str | None, **extra: Any
    ) -> None:
        super().__init__(detail or title, **extra)
        self.status = status
        self.problem_code = code
        self.problem_title = title

    def to_response(self, request: Request | None = None) -> JSONResponse:
        return problem_response(
            self.status,
            code=self.problem_code,
            title=self.problem_title,
            detail=self.detail,
            instance=request.url.path if request is not None else None,
            extra=self.extra,
        )


class AuthApi:
    """Calls to auth's internal user API; one per request, sharing the app's HTTP client."""

    def __init__(self, http: httpx.AsyncClient, tokens: TokenProvider | None, auth_url: str):
        self._http = http
        self._tokens = tokens
        self._base = auth_url.rstrip("/")

    async def create_user(
        self,
        *,
        username: str,
        password_hash: str,
        role: Role,
        idempotency_key: str,
        actor: str,
        approval: dict[str, Any] | None = None,
    ) -> AuthUser:
        """Create a user from an argon2id hash; the same ``idempotency_key`` again returns
        the user made the first time (never a second account). ``approval`` is the signed
        decision the user comes from (auth requires it for an admin and verifies it)."""
        body: dict[str, Any] = {
            "username": username,
            "password_hash": password_hash,
            "role": role.value,
            "idempotency_key": idempotency_key,
            "actor": actor,
        }
        if approval is not None:
            body["approval"] = approval
        response = await self._call("POST", USERS_PATH, json=body)
        return _parse(AuthUser, response)

    async def find_user_by_username(self, username: str) -> AuthUser | None:
        """The user called exactly ``username`` (normalized), or None."""
        response = await self._call("GET", USERS_PATH, params={"username": username, "limit": 2})
        page = _parse(Page[AuthUser], response)
        # Filtered here too: an older auth without the exact filter would ignore it.
        return next((user for user in page.items if user.username == username), None)

    async def list_users(
        self,
        *,
        role: Role | None = None,
        is_active: bool | None = None,
        q: str | None = None,
        limit: int,
        cursor: str | None = None,
    ) -> Page[AuthUser]:
        """A page of users, in auth's order, with auth's cursor."""
        params: dict[str, str | int] = {"limit": limit}
        if role is not None:
            params["role"] = role.value
        if is_active is not None:
            params["is_active"] = "true" if is_active else "false"
        if q:
            params["q"] = q
        if cursor is not None:
            params["cursor"] = cursor
        response = await self._call("GET", USERS_PATH, params=params)
        return _parse(Page[AuthUser], response)

    async def get_user(self, user_id: int) -> AuthUser:
        """One user; ``UserNotFound`` (404) when there is none."""
        return _parse(AuthUser, await self._call("GET", f"{USERS_PATH}/{user_id}"))

    async def update_user(
        self,
        user_id: int,
        *,
        role: Role | None,
        is_active: bool | None,
        actor: str,
        acting_user_token: str | None = None,
    ) -> AuthUser:
        """Change role and/or active flag; auth ends the user's sessions and refuses to
        demote or deactivate the last active admin (``LastAdmin``, 409). Granting admin
        needs ``acting_user_token``, the asking admin's own access token
        (``ActingAdminRequired``, 403, otherwise)."""
        body: dict[str, Any] = {"actor": actor}
        if role is not None:
            body["role"] = role.value
        if is_active is not None:
            body["is_active"] = is_active
        headers = {"X-Flightdeck-Acting-User": acting_user_token} if acting_user_token else None
        response = await self._call(
            "PATCH", f"{USERS_PATH}/{user_id}", json=body, extra_headers=headers
        )
        return _parse(AuthUser, response)

    async def approval_key(self, user_id: int) -> ApprovalKey:
        """The user's approval key; ``ApprovalKeyNotFound`` (404) when none is registered."""
        response = await self._call("GET", f"{USERS_PATH}/{user_id}/approval-key")
        return _parse(ApprovalKey, response)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        if self._tokens is None:
            raise AuthUnavailable(
                "This service has no credentials for the auth service "
                "(FLIGHTDECK_ADMIN_SERVICE_CLIENT_ID/SECRET)."
            )
        headers = {"Accept": "application/json", **(extra_headers or {})}
        request_id = request_id_var.get()
        if request_id:
            headers["X-Request-ID"] = request_id
        response: httpx.Response | None = None
        for attempt in range(2):
            headers["Authorization"] = f"Bearer {await self._token()}"
            try:
                response = await self._http.request(
                    method, f"{self._base}{path}", json=json, params=params, headers=headers
                )
            except _NOT_SENT as exc:
                logger.warning("auth internal API %s %s failed: %r", method, path, exc)
                raise AuthUnavailable("The auth service cannot be reached.") from exc
            except httpx.HTTPError as exc:
                logger.warning("auth internal API %s %s got no answer: %r", method, path, exc)
                raise AuthAnswerLost("The auth service did not answer.") from exc
            if response.status_code == 401 and attempt == 0:
                self._tokens.invalidate()  # expired or revoked: fetch a new one, once
                continue
            break
        assert response is not None
        status = response.status_code
        if status < 400:
            return response
        if status >= 500:
            logger.warning("auth internal API %s %s answered HTTP %s", method, path, status)
            raise AuthAnswerLost("The auth service failed to handle this request.")
        if status == 403 and _problem_code(response) in _PASSED_ON_403:
            raise _problem(response)  # auth refused the signed approval or the acting admin
        if status in (401, 403, 429):
            logger.warning("auth internal API %s %s answered HTTP %s", method, path, status)
            raise AuthUnavailable("The auth service cannot handle this request right now.")
        raise _problem(response)

    async def _token(self) -> str:
        assert self._tokens is not None
        try:
            return await self._tokens.token()
        except ServiceCredentialsRejected as exc:
            logger.error("%s", exc)
            raise AuthUnavailable("The auth service refuses this service's credentials.") from exc


def _parse(model: type[_ModelT], response: httpx.Response) -> _ModelT:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        logger.warning("auth internal API answered an unexpected body: %s", exc)
        raise AuthUnavailable("The auth service answered something unexpected.") from exc


def _problem(response: httpx.Response) -> FlightdeckError:
    """Auth's 4xx answer as an error of ours with the same status, code and detail."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    detail = body.get("detail")
    title = body.get("title")
    detail = detail if isinstance(detail, str) else None
    known = _KNOWN_PROBLEMS.get(code) if isinstance(code, str) else None
    if known is not None and known.status_code == response.status_code:
        return known(detail)
    errors = body.get("errors")
    extra = {"errors": errors} if isinstance(errors, list) else {}
    return AuthRejected(
        response.status_code,
        code if isinstance(code, str) else "auth_rejected",
        title if isinstance(title, str) else "Rejected by the auth service",
        detail,
        **extra,
    )


def get_auth_api(request: Request) -> AuthApi:
    """The client of auth's internal API, over the HTTP client the auth lifespan made."""
    http: httpx.AsyncClient | None = getattr(request.app.state, "auth_http", None)
    if http is None:
        raise AuthUnavailable("The auth client is not running.")
    tokens: TokenProvider | None = getattr(request.app.state, "auth_service_tokens", None)
    return AuthApi(http, tokens, request.app.state.settings.auth_url)


AuthApiDep = Annotated[AuthApi, Depends(inline(get_auth_api))]
