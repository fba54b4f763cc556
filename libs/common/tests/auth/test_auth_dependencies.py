"""Route guards: require_user / require_service on a FastAPI app, errors as problem+json."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from flightdeck_common.auth import (
    ADMIN_INTERNAL_AUDIENCE,
    AUTH_REVOCATIONS_AUDIENCE,
    USER_AUTH_RESPONSES,
    AdminUser,
    AuthContext,
    CurrentUser,
    JwksKeySource,
    MemoryRevocations,
    MfaEnrolmentUser,
    OperatorUser,
    Role,
    StaticKeySource,
    TokenClaims,
    TokenVerifier,
    install_auth,
    require_service,
    require_user,
)
from flightdeck_common.auth.testing import TokenMinter
from flightdeck_common.errors import PROBLEM_JSON, install_error_handlers
from flightdeck_common.openapi import document_problems


class CountingKeySource(StaticKeySource):
    lookups = 0

    async def get(self, kid: str) -> Any:
        self.lookups += 1
        return await super().get(kid)


def _app(context: AuthContext) -> FastAPI:
    router = APIRouter(responses=USER_AUTH_RESPONSES)

    @router.get("/runs")
    async def list_runs(user: CurrentUser) -> dict[str, Any]:
        """Any signed-in user."""
        return {"sub": user.sub, "role": user.role}

    @router.post("/runs")
    async def create_run(user: OperatorUser) -> dict[str, Any]:
        """Operators and admins."""
        return {"sub": user.sub}

    @router.delete("/runs")
    async def purge_runs(user: AdminUser) -> dict[str, Any]:
        """Admins only."""
        return {"sub": user.sub}

    @router.post("/me/mfa")
    async def enrol_totp(user: MfaEnrolmentUser) -> dict[str, Any]:
        """Reachable while MFA enrolment is pending."""
        return {"sub": user.sub, "pending": user.mfa_enrolment_required}

    @router.post("/internal/audit", dependencies=[Depends(require_user(Role.ADMIN))])
    async def double_declared(user: AdminUser) -> dict[str, Any]:
        """Declared twice: verified once."""
        return {"sub": user.sub}

    @router.post("/internal/events")
    async def append_events(
        caller: Annotated[TokenClaims, Depends(require_service(ADMIN_INTERNAL_AUDIENCE))],
    ) -> dict[str, Any]:
        """Service accounts only."""
        return {"client_id": caller.client_id}

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    document_problems(app)
    install_auth(app, context)
    return app


@pytest.fixture
def revocations() -> MemoryRevocations:
    return MemoryRevocations()


@pytest.fixture
def keys(minter: TokenMinter) -> CountingKeySource:
    return CountingKeySource({kid: k.public_key() for kid, k in minter.keys.items()})


@pytest.fixture
async def client(
    keys: CountingKeySource, revocations: MemoryRevocations
) -> AsyncIterator[httpx.AsyncClient]:
    app = _app(AuthContext(TokenVerifier(keys, revocations=revocations)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://svc"
    ) as http:
        yield http


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["type"] == f"urn:flightdeck:problem:{code}"
    assert body["status"] == status
    return body


async def test_missing_token_is_a_401_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/runs")
    body = _assert_problem(response, 401, "invalid_token")
    assert body["detail"] == "Missing bearer token."
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token abc", "bearer"]
)
async def test_malformed_authorization_header_is_a_401(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await client.get("/runs", headers={"Authorization": authorization})
    _assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_invalid_token_is_a_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/runs", headers=_bearer("not.a.jwt"))
    _assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    response = await client.get("/runs", headers={"Authorization": f"bearer {minter.user_token()}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.VIEWER, {"GET"}),
        (Role.OPERATOR, {"GET", "POST"}),
        (Role.ADMIN, {"GET", "POST", "DELETE"}),
    ],
)
async def test_roles(
    client: httpx.AsyncClient, minter: TokenMinter, role: Role, allowed: set[str]
) -> None:
    token = minter.user_token("9", role)
    for method in ("GET", "POST", "DELETE"):
        response = await client.request(method, "/runs", headers=_bearer(token))
        if method in allowed:
            assert response.status_code == 200, response.text
            assert response.json()["sub"] == "9"
        else:
            body = _assert_problem(response, 403, "insufficient_role")
            assert body["required_role"] == ("operator" if method == "POST" else "admin")


async def test_pending_mfa_enrolment_confines_the_token(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    token = minter.user_token("3", Role.ADMIN, mfa_enrolment_required=True)
    for method in ("GET", "POST", "DELETE"):
        response = await client.request(method, "/runs", headers=_bearer(token))
        _assert_problem(response, 403, "mfa_enrolment_required")
    response = await client.post("/me/mfa", headers=_bearer(token))
    assert response.status_code == 200
    assert response.json() == {"sub": "3", "pending": True}


async def test_service_token_is_refused_on_user_routes(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    service = minter.service_token(audiences=[ADMIN_INTERNAL_AUDIENCE])
    _assert_problem(await client.get("/runs", headers=_bearer(service)), 401, "invalid_token")
    # Even one that (wrongly) carries the user audience.
    odd = minter.service_token(audiences=["flightdeck", ADMIN_INTERNAL_AUDIENCE])
    response = await client.get("/runs", headers=_bearer(odd))
    assert _assert_problem(response, 401, "invalid_token")["detail"] == (
        "A user access token is required."
    )


async def test_service_routes_take_service_tokens_for_their_audience(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    right = minter.service_token("pipeline", [AUTH_REVOCATIONS_AUDIENCE, ADMIN_INTERNAL_AUDIENCE])
    response = await client.post("/internal/events", headers=_bearer(right))
    assert response.status_code == 200
    assert response.json() == {"client_id": "pipeline"}

    wrong = minter.service_token("pipeline", [AUTH_REVOCATIONS_AUDIENCE])
    response = await client.post("/internal/events", headers=_bearer(wrong))
    _assert_problem(response, 401, "invalid_token")

    user = minter.user_token(role=Role.ADMIN)
    response = await client.post("/internal/events", headers=_bearer(user))
    _assert_problem(response, 401, "invalid_token")
    odd_user = minter.user_token(role=Role.ADMIN, audience=[ADMIN_INTERNAL_AUDIENCE])
    response = await client.post("/internal/events", headers=_bearer(odd_user))
    assert _assert_problem(response, 401, "invalid_token")["detail"] == (
        "A service token is required."
    )


async def test_revoked_token_is_a_401_token_revoked(
    client: httpx.AsyncClient, minter: TokenMinter, revocations: MemoryRevocations
) -> None:
    token = minter.user_token("5")
    assert (await client.get("/runs", headers=_bearer(token))).status_code == 200
    await revocations.revoke_subject("5", time.time() + 1, 900)
    response = await client.get("/runs", headers=_bearer(token))
    _assert_problem(response, 401, "token_revoked")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_guard_declared_twice_verifies_once(
    client: httpx.AsyncClient, minter: TokenMinter, keys: CountingKeySource
) -> None:
    token = minter.user_token(role=Role.ADMIN)
    response = await client.post("/internal/audit", headers=_bearer(token))
    assert response.status_code == 200
    assert keys.lookups == 1
    assert require_user(Role.ADMIN) is require_user("admin", allow_mfa_enrolment=False)


async def test_auth_down_with_an_unknown_kid_is_a_503_problem(
    jwks_server: Any, minter: TokenMinter
) -> None:
    jwks_server.fail(unreachable=True)
    source = JwksKeySource(jwks_server.url, jwks_server.http)
    app = _app(AuthContext(TokenVerifier(source)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        response = await c.get("/runs", headers=_bearer(minter.user_token()))
    _assert_problem(response, 503, "auth_unavailable")
    assert response.headers["retry-after"] == "5"


async def test_openapi_declares_the_bearer_scheme_and_auth_problems(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": schemes["HTTPBearer"]["description"],
        }
    }
    list_runs = schema["paths"]["/runs"]["get"]
    assert list_runs["security"] == [{"HTTPBearer": []}]
    assert schema["paths"]["/internal/events"]["post"]["security"] == [{"HTTPBearer": []}]
    for status in ("401", "403", "503"):
        assert PROBLEM_JSON in list_runs["responses"][status]["content"]
