"""The app factory: docs under the prefix, readable operation ids, lifespan, CORS, sessions."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Request, status
from pydantic import BaseModel

from flightdeck_common.dependencies import ResourcesDep, SessionDep, inline
from flightdeck_common.errors import Conflict
from flightdeck_common.resources import Resources
from flightdeck_common.service_app import ServiceSpec, create_service_app

router = APIRouter(prefix="/things", tags=["things"])


class Widget(BaseModel):
    name: str


@router.get("")
async def list_widgets() -> list[Widget]:
    """List widgets."""
    return []


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_widget(widget: Widget) -> Widget:
    """Create a widget."""
    return widget


@router.get("/service-name")
async def read_service_name(resources: ResourcesDep) -> dict[str, str]:
    """Name of the service owning the resources."""
    return {"service": resources.settings.service_name}


# --- docs and schema ------------------------------------------------------------------------------


@pytest.fixture
async def service(start_service: Any) -> Any:
    return await start_service(router)


async def test_schema_is_served_under_the_prefix(service: Any) -> None:
    response = await service.client.get("/things/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Things"
    assert schema["info"]["version"] == "1.2.3"
    assert schema["info"]["description"] == "Unit-test service"
    assert set(schema["paths"]) == {"/things", "/things/service-name"}


@pytest.mark.parametrize("path", ["/things/docs", "/things/redoc"])
async def test_docs_are_served_under_the_prefix(service: Any, path: str) -> None:
    response = await service.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/things/openapi.json" in response.text


async def test_swagger_oauth2_redirect_is_under_the_prefix(service: Any) -> None:
    assert (await service.client.get("/things/docs/oauth2-redirect")).status_code == 200


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_framework_default_doc_paths_are_not_served(service: Any, path: str) -> None:
    assert (await service.client.get(path)).status_code == 404


async def test_operation_ids_are_handler_names(service: Any) -> None:
    schema = (await service.client.get("/things/openapi.json")).json()
    operations = {
        (path, method): operation["operationId"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    assert operations == {
        ("/things", "get"): "list_widgets",
        ("/things", "post"): "create_widget",
        ("/things/service-name", "get"): "read_service_name",
    }


async def test_probes_and_metrics_are_not_in_the_schema(service: Any) -> None:
    schema = (await service.client.get("/things/openapi.json")).json()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path not in schema["paths"]
        assert (await service.client.get(path)).status_code == 200


def test_openapi_tags_from_the_spec(build_app: Any) -> None:
    tags = [{"name": "things", "description": "Things and more things."}]
    schema = build_app(router, openapi_tags=tags).openapi()
    assert schema["tags"] == tags


def test_duplicate_handler_names_are_refused_at_creation(build_app: Any) -> None:
    other = APIRouter(prefix="/other")

    @other.get("/widgets")
    async def list_widgets() -> list[Widget]:
        """Another list_widgets."""
        return []

    with pytest.raises(RuntimeError, match="list_widgets") as excinfo:
        build_app(router, other)
    assert "/other/widgets" in str(excinfo.value)


def test_duplicate_names_within_one_router_are_refused(build_app: Any) -> None:
    same = APIRouter(prefix="/things")

    @same.get("/a")
    async def read_thing() -> dict[str, str]:
        """A."""
        return {}

    @same.get("/b", name="read_thing")
    async def read_other_thing() -> dict[str, str]:
        """B, deliberately named like A."""
        return {}

    with pytest.raises(RuntimeError, match="read_thing"):
        build_app(same)


def _answer(request: Request) -> str:
    """A plain ``def`` lookup that says which thread ran it."""
    on_loop = threading.current_thread() is threading.main_thread()
    return f"{request.app.state.settings.service_name} on {'the loop' if on_loop else 'a worker'}"


def test_plain_def_dependencies_are_refused_at_creation(build_app: Any) -> None:
    """FastAPI would run them in its thread pool: a thread hop per request."""
    blocking = APIRouter(prefix="/things")

    @blocking.get("/answer")
    async def read_answer(answer: Annotated[str, Depends(_answer)]) -> dict[str, str]:
        """The answer."""
        return {"answer": answer}

    with pytest.raises(RuntimeError, match="_answer") as excinfo:
        build_app(blocking)
    assert "/things/answer" in str(excinfo.value)


async def test_inline_dependencies_run_on_the_event_loop(start_service: Any) -> None:
    inlined = APIRouter(prefix="/things")

    @inlined.get("/answer")
    async def read_answer(answer: Annotated[str, Depends(inline(_answer))]) -> dict[str, str]:
        """The answer."""
        return {"answer": answer}

    service = await start_service(inlined)
    response = await service.client.get("/things/answer")
    assert response.json() == {"answer": f"{service.settings.service_name} on the loop"}


def test_hidden_routes_may_share_names(build_app: Any) -> None:
    hidden = APIRouter(prefix="/things", include_in_schema=False)

    @hidden.get("/internal")
    async def list_widgets() -> list[Widget]:
        """Hidden duplicate of list_widgets."""
        return []

    assert isinstance(build_app(router, hidden), FastAPI)


# --- lifespan -----------------------------------------------------------------------------------


async def test_lifespan_puts_resources_on_app_state(service: Any) -> None:
    resources = service.app.state.resources
    assert isinstance(resources, Resources)
    assert resources.settings is service.settings
    assert resources.redis is None
    assert str(resources.engine.url) == service.settings.database_url
    response = await service.client.get("/things/service-name")
    assert response.json() == {"service": "test"}


async def test_lifespan_hooks_run_in_order_and_close_in_reverse(build_app: Any) -> None:
    events: list[str] = []

    def hook(name: str) -> Any:
        @contextlib.asynccontextmanager
        async def run(app: FastAPI, resources: Resources) -> AsyncIterator[None]:
            assert app.state.resources is resources
            events.append(f"start {name}")
            yield
            events.append(f"stop {name}")

        return run

    app = build_app(router, lifespan_hooks=[hook("a"), hook("b")])
    async with app.router.lifespan_context(app):
        assert events == ["start a", "start b"]
    assert events == ["start a", "start b", "stop b", "stop a"]


async def test_engine_is_disposed_at_shutdown(build_app: Any) -> None:
    app = build_app(router)
    async with app.router.lifespan_context(app):
        engine = app.state.resources.engine
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
        assert engine.pool.checkedin() == 1
    assert engine.pool.checkedin() == 0


def test_app_creation_does_not_connect(make_settings: Any) -> None:
    # Nothing connects at import or creation: an unreachable database is fine until the lifespan.
    settings = make_settings(
        database_url="postgresql+asyncpg://u:p@127.0.0.1:1/x", migrate_on_start=False
    )
    app = create_service_app(settings, ServiceSpec(title="t", description="d", version="1"))
    assert app.state.settings is settings


# --- CORS --------------------------------------------------------------------------------------


async def test_no_cors_headers_by_default(service: Any) -> None:
    response = await service.client.get("/things", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allow_list(start_service: Any, make_settings: Any) -> None:
    service = await start_service(
        router, settings=make_settings(cors_allow_origins=["https://ui.example"])
    )
    preflight = await service.client.options(
        "/things",
        headers={
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-request-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://ui.example"
    allowed = await service.client.get("/things", headers={"Origin": "https://ui.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    refused = await service.client.get("/things", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers


# --- SessionDep: one transaction per request ----------------------------------------------------

notes_metadata = sa.MetaData()
notes = sa.Table(
    "notes",
    notes_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.String(100), nullable=False),
)


class NoteIn(BaseModel):
    id: int
    text: str
    then: str = "commit"


notes_router = APIRouter(prefix="/things/notes")


@notes_router.post("", status_code=201)
async def create_note(note: NoteIn, session: SessionDep) -> dict[str, int]:
    """Insert a note, then succeed or fail as asked."""
    await session.execute(sa.insert(notes).values(id=note.id, text=note.text))
    if note.then == "conflict":
        raise Conflict("changed my mind")
    if note.then == "crash":
        raise RuntimeError("unexpected")
    return {"id": note.id}


@notes_router.get("")
async def list_notes(session: SessionDep) -> list[str]:
    """Texts of the committed notes."""
    return list((await session.scalars(sa.select(notes.c.text).order_by(notes.c.id))).all())


@pytest.fixture
async def notes_client(start_service: Any) -> Any:
    service = await start_service(notes_router)
    async with service.app.state.resources.engine.begin() as connection:
        await connection.run_sync(notes_metadata.create_all)
    return service.client


async def test_session_commits_on_success(notes_client: Any) -> None:
    response = await notes_client.post("/things/notes", json={"id": 1, "text": "kept"})
    assert response.status_code == 201
    assert (await notes_client.get("/things/notes")).json() == ["kept"]


@pytest.mark.parametrize(("then", "status_code"), [("conflict", 409), ("crash", 500)])
async def test_session_rolls_back_on_error(notes_client: Any, then: str, status_code: int) -> None:
    await notes_client.post("/things/notes", json={"id": 1, "text": "kept"})
    response = await notes_client.post(
        "/things/notes", json={"id": 2, "text": "discarded", "then": then}
    )
    assert response.status_code == status_code
    assert (await notes_client.get("/things/notes")).json() == ["kept"]


async def test_failed_commit_fails_the_request(notes_client: Any) -> None:
    await notes_client.post("/things/notes", json={"id": 1, "text": "first"})
    duplicate = await notes_client.post("/things/notes", json={"id": 1, "text": "second"})
    assert duplicate.status_code >= 400
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert (await notes_client.get("/things/notes")).json() == ["first"]
