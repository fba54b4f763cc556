"""Clients generated from the committed schemas drive the whole product through the ingress.

``make clients``'s generator (``flightdeck_common.clients_build``) writes the three client
projects into a temp dir; a child interpreter with only those projects added to its path
runs ``generated_client_story.py`` against a stack of its own. The child keeps the generated
packages out of this process (no ``sys.path`` or ``sys.modules`` residue for later tests) and
imports them the way an installed client is imported: from its own project directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flightdeck_common import clients_build
from flightdeck_common.devstack.stack import Stack
from flightdeck_common.openapi_export import SERVICES
from flightdeck_common.testing.plugin import isolated_stack_config

REPO_ROOT = Path(__file__).resolve().parents[4]
OPENAPI_DIR = REPO_ROOT / "openapi"
STORY = Path(__file__).with_name("generated_client_story.py")
FIXTURES = REPO_ROOT / "services" / "pipeline" / "tests" / "fixtures" / "github"
STORY_TIMEOUT = 120


@pytest.fixture(scope="module")
def story_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the story enrols TOTP on the bootstrap admin, which the shared
    session stack's other tests log in as with a password only."""
    with Stack(isolated_stack_config(tmp_path_factory.mktemp("story-stack"))) as stack:
        yield stack


@pytest.mark.e2e
def test_the_generated_clients_tell_the_whole_story(story_stack: Stack, tmp_path: Path) -> None:
    started = time.monotonic()
    clients = clients_build.generate(out_dir=tmp_path / "clients", schema_dir=OPENAPI_DIR)
    generated_in = time.monotonic() - started
    assert [client.package for client in clients] == [
        "flightdeck_auth_client",
        "flightdeck_pipeline_client",
        "flightdeck_admin_client",
    ]
    for client in clients:
        assert (client.project_dir / "pyproject.toml").is_file()
        assert (client.project_dir / client.package / "client.py").is_file()

    extra_env = story_stack.config.extra_env
    story_input: dict[str, Any] = {
        "ingress_url": story_stack.ingress_url,
        # Internal APIs answer 404 at the ingress: the story calls them where services do.
        "auth_internal_url": story_stack.service_call_url("auth"),
        "bootstrap_admin": [
            extra_env.get("FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_USERNAME", "admin"),
            extra_env["FLIGHTDECK_AUTH_BOOTSTRAP_ADMIN_PASSWORD"],
        ],
        "webhook_secret": extra_env["FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS"].split(",")[0],
        "fixtures": str(FIXTURES),
    }
    path = [str(client.project_dir) for client in clients]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")])}
    story_started = time.monotonic()
    story = subprocess.run(
        [sys.executable, str(STORY), json.dumps(story_input)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STORY_TIMEOUT,
        check=False,
    )
    told_in = time.monotonic() - story_started
    assert story.returncode == 0, f"the story failed:\n{story.stderr}\n{story.stdout}"
    summary = json.loads(story.stdout.splitlines()[-1])

    # The packages came from the generated projects, not from anything installed.
    for package, directory in summary["packages"].items():
        assert Path(directory).is_relative_to(tmp_path), (package, directory)
    assert len(summary["steps"]) == 10, summary["steps"]
    assert summary["stats"]["total"] == 3
    assert summary["dora_deployments"] == 1
    assert summary["audit_events_checked"] >= 5
    print(f"\ngenerated the clients in {generated_in:.1f} s, told the story in {told_in:.1f} s")
    print(story.stderr.strip())


def test_a_schema_the_generator_warns_about_fails_the_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make clients`` is strict: a warning (here an endpoint it cannot generate) fails it."""
    schema = {
        "openapi": "3.1.0",
        "info": {"title": "Warned", "version": "1"},
        "paths": {
            "/auth/csv": {
                "post": {
                    "operationId": "upload_csv",
                    "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}},
                    "responses": {"204": {"description": "done"}},
                }
            }
        },
    }
    (tmp_path / "auth.json").write_text(json.dumps(schema), encoding="utf-8")
    argv = ["auth", "--out", str(tmp_path / "out"), "--schemas", str(tmp_path)]
    assert clients_build.main(argv) == 1
    assert "Unsupported content type text/csv" in capsys.readouterr().err


def test_make_clients_uses_the_shared_generator() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^clients:.*## ", makefile, re.MULTILINE)
    assert "flightdeck_common.clients_build" in makefile
    assert tuple(SERVICES) == clients_build.SERVICES  # the services `make openapi` writes
    assert "build/" in (REPO_ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert re.search(r"^clean:.*\n\trm -rf [^\n]*\bbuild\b", makefile, re.MULTILINE)
