"""The client of auth's internal API: token retry, outages as 503, auth's 4xx passed on."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from flightdeck_admin.auth_api import (
    AuthAnswerLost,
    AuthApi,
    AuthRejected,
)
from flightdeck_common.auth.claims import Role
from flightdeck_common.auth.errors import AuthUnavailable
from flightdeck_common.auth.service_tokens import ServiceCredentialsRejected
from flightdeck_common.user_errors import LastAdmin, UserNotFound

USER = {
    "id": 7,
    "username": "gil",
    "role": "viewer",
    "is_active": True,
    "mfa_enabled": False,
    "created_at": "2026-11-25T10:00:00Z",
}


class FakeTokens:
    def __init__(self, error: Exception | None = None) -> None:
        self.issued = 0
        self.invalidated = 0
        self.error = error

    async def token(self) -> str:
        if self.error is not None:
            raise self.error
        self.issued += 1
        return f"token-{self.issued}"

    def invalidate(self) -> None:
        self.invalidated += 1


def api_answering(
    *answers: httpx.Response | Exception, tokens: FakeTokens | None = None
) -> tuple[AuthApi, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AuthApi(http, tokens or FakeTokens(), "http://auth/"), seen


def problem(status: int, code: str, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": f"urn:flightdeck:problem:{code}", "title": "T", "status": status}
    return httpx.Response(
        status,
        content=json.dumps({**body, "code": code, "detail": detail, **extra}),
        headers={"Content-Type": "application/problem+json"},
    )


async def test_a_rejected_token_is_renewed_once() -> None:
    tokens = FakeTokens()
    api, seen = api_answering(
        problem(401, "token_revoked", "revoked"), httpx.Response(200, json=USER), tokens=tokens
    )
    user = await api.get_user(7)
    assert user.username == "gil"
    assert [r.headers["authorization"] for r in seen] == ["Bearer token-1", "Bearer token-2"]
    assert tokens.invalidated == 1
    assert seen[0].url == "http://auth/auth/internal/users/7"


@pytest.mark.parametrize(
    "answers",
    [
        (problem(401, "invalid_token", "no"), problem(401, "invalid_token", "no")),
        (problem(403, "forbidden", "no"),),
        (httpx.Response(500, text="boom"),),
        (httpx.Response(502),),
        (problem(429, "rate_limited", "slow down"),),
        (httpx.ConnectError("refused"),),
        (httpx.ReadTimeout("slow"),),
        (httpx.Response(200, text="<html>not json</html>"),),
        (httpx.Response(200, json={"id": "not a user"}),),
    ],
)
async def test_outages_and_nonsense_are_auth_unavailable(
    answers: tuple[httpx.Response | Exception, ...],
) -> None:
    api, _ = api_answering(*answers)
    with pytest.raises(AuthUnavailable) as caught:
        await api.get_user(7)
    response = caught.value.to_response()
    assert response.status_code == 503
    assert response.headers["retry-after"]


@pytest.mark.parametrize(
    ("answer", "maybe_handled"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (problem(429, "rate_limited", "slow down"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("cut"), True),
        (httpx.Response(500), True),
    ],
)
async def test_lost_answers_are_told_from_refusals(
    answer: httpx.Response | Exception, maybe_handled: bool
) -> None:
    """A create that may have happened at auth is ``AuthAnswerLost``; one that surely
    did not is plain ``AuthUnavailable``."""
    api, _ = api_answering(answer)
    with pytest.raises(AuthUnavailable) as caught:
        await api.create_user(
            username="gil", password_hash="h", role=Role.VIEWER, idempotency_key="k", actor="a"
        )
    assert isinstance(caught.value, AuthAnswerLost) is maybe_handled
    assert caught.value.to_response().status_code == 503


@pytest.mark.parametrize(
    "make_api",
    [
        lambda: AuthApi(httpx.AsyncClient(), None, "http://auth"),
        lambda: AuthApi(
            httpx.AsyncClient(), FakeTokens(ServiceCredentialsRejected("bad secret")), "http://a"
        ),
    ],
    ids=["no-credentials", "credentials-rejected"],
)
async def test_missing_or_refused_credentials_are_auth_unavailable(
    make_api: Callable[[], AuthApi],
) -> None:
    with pytest.raises(AuthUnavailable):
        await make_api().list_users(limit=10)


async def test_known_problems_keep_their_class_and_detail() -> None:
    api, _ = api_answering(
        problem(409, "last_admin", "keep one"), problem(404, "user_not_found", "gone")
    )
    with pytest.raises(LastAdmin) as last:
        await api.update_user(1, role=None, is_active=False, actor="root")
    assert last.value.detail == "keep one"
    with pytest.raises(UserNotFound):
        await api.get_user(1)


async def test_other_problems_are_passed_on_as_auth_answered() -> None:
    errors = [{"loc": ["body", "role"], "msg": "bad", "type": "enum"}]
    api, _ = api_answering(
        problem(422, "validation_failed", "1 field(s) failed validation.", errors=errors),
        httpx.Response(404, text="plain"),
    )
    with pytest.raises(AuthRejected) as rejected:
        await api.get_user(1)
    response = rejected.value.to_response()
    body = json.loads(bytes(response.body))
    assert response.status_code == 422
    assert response.media_type == "application/problem+json"
    assert (body["code"], body["detail"], body["errors"]) == (
        "validation_failed",
        "1 field(s) failed validation.",
        errors,
    )
    with pytest.raises(AuthRejected) as plain:
        await api.get_user(1)
    assert plain.value.to_response().status_code == 404


async def test_find_by_username_is_exact() -> None:
    page = {"items": [{**USER, "username": "gilbert"}], "next_cursor": None}
    api, seen = api_answering(httpx.Response(200, json=page))
    assert await api.find_user_by_username("gil") is None
    assert seen[0].url.params["username"] == "gil"
