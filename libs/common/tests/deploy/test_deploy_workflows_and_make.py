"""The GitHub workflows, the Makefile and .ci/run: valid, least privilege, pinned, documented.

Workflows are validated against the workflow schema that check-jsonschema ships (the
SchemaStore one GitHub's editor support uses); actionlint cannot be installed here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[4]
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])
MAKEFILE = REPO_ROOT / "Makefile"
CI_RUN = REPO_ROOT / ".ci" / "run"
SERVICES = sorted(path.parent.name for path in (REPO_ROOT / "services").glob("*/pyproject.toml"))

# Workflows the deployment issue asks for.
EXPECTED_WORKFLOWS = {"ci.yml", "security.yml", "performance.yml", "images.yml"}
# Targets the deployment issue names (`bench`, `clients` and `fuzz` from the scale and
# contract issues).
EXPECTED_TARGETS = {
    "bench",
    "bench-quick",
    "clients",
    "fuzz",
    "help",
    "install",
    "run",
    "run-full",
    "test",
    "lint",
    "fmt",
    "typecheck",
    "migrate",
    "compose-up",
    "compose-down",
    "k8s-render",
    "k8s-validate",
    "deploy-check",
    "clean",
}


class _WorkflowLoader(yaml.SafeLoader):
    """YAML as GitHub reads it: only true/false are booleans, so `on:` stays a string key."""


_WorkflowLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_WorkflowLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_workflow(path: Path) -> dict[str, Any]:
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=_WorkflowLoader)  # noqa: S506
    assert isinstance(document, dict), f"{path.name}: not a mapping"
    return document


@cache
def workflow_schema() -> dict[str, Any]:
    resource = files("check_jsonschema.builtin_schemas.vendor").joinpath("github-workflows.json")
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def workflow_ids() -> list[str]:
    return [path.name for path in WORKFLOW_FILES]


def steps_of(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job_name, step)
        for job_name, job in workflow["jobs"].items()
        for step in job.get("steps", [])
    ]


def test_the_expected_workflows_exist() -> None:
    assert {path.name for path in WORKFLOW_FILES} >= EXPECTED_WORKFLOWS


def test_the_loader_keeps_on_as_a_key() -> None:
    document = yaml.load("on:\n  push: {}\nflag: yes\nreal: true\n", Loader=_WorkflowLoader)  # noqa: S506
    assert document == {"on": {"push": {}}, "flag": "yes", "real": True}


def test_the_schema_rejects_a_broken_workflow() -> None:
    """The check below has teeth: a job without runs-on or steps is not a workflow."""
    schema = workflow_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    broken = {"on": "push", "jobs": {"build": {"stepz": []}}}
    assert list(validator.iter_errors(broken))


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=workflow_ids())
def test_workflow_matches_the_github_workflow_schema(path: Path) -> None:
    schema = workflow_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(
        validator_class(schema).iter_errors(load_workflow(path)), key=lambda e: list(e.path)
    )
    messages = [
        f"{'/'.join(map(str, error.path)) or '<root>'}: {error.message}" for error in errors
    ]
    assert not messages, f"{path.name}:\n" + "\n".join(messages)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=workflow_ids())
def test_workflow_sets_least_privilege_permissions(path: Path) -> None:
    workflow = load_workflow(path)
    assert "permissions" in workflow, f"{path.name}: no top-level permissions"
    scopes = [workflow["permissions"]] + [
        job["permissions"] for job in workflow["jobs"].values() if "permissions" in job
    ]
    for scope in scopes:
        assert scope not in ("write-all", "read-all"), f"{path.name}: permissions {scope!r}"
    top = workflow["permissions"]
    assert isinstance(top, dict)
    writes = {name for name, level in top.items() if level == "write"}
    assert not writes, f"{path.name}: grant {sorted(writes)} per job, not to the whole workflow"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=workflow_ids())
def test_workflow_has_a_concurrency_group(path: Path) -> None:
    concurrency = load_workflow(path).get("concurrency")
    assert isinstance(concurrency, dict)
    assert concurrency.get("group"), f"{path.name}: concurrency without a group"


_PINNED_REF = re.compile(r"^(?:[0-9a-f]{40}|v?\d+(?:\.\d+){0,2})$")


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=workflow_ids())
def test_every_action_is_pinned_to_a_version(path: Path) -> None:
    workflow = load_workflow(path)
    uses = [step["uses"] for _, step in steps_of(workflow) if "uses" in step]
    uses += [job["uses"] for job in workflow["jobs"].values() if "uses" in job]
    unpinned = []
    for reference in uses:
        if reference.startswith("./"):
            continue  # an action of this repository, versioned with it
        if reference.startswith("docker://"):
            image = reference.removeprefix("docker://")
            if "@sha256:" not in image and (":" not in image or image.endswith(":latest")):
                unpinned.append(reference)
            continue
        action, _, ref = reference.partition("@")
        if not action or not _PINNED_REF.match(ref):
            unpinned.append(reference)
    assert not unpinned, f"{path.name}: not pinned to a version or commit: {unpinned}"


@pytest.mark.parametrize("name", ["images.yml", "security.yml"])
def test_image_matrices_cover_every_service(name: str) -> None:
    workflow = load_workflow(WORKFLOWS_DIR / name)
    matrices = [
        job["strategy"]["matrix"]["service"]
        for job in workflow["jobs"].values()
        if "service" in job.get("strategy", {}).get("matrix", {})
    ]
    assert matrices, f"{name}: no job with a service matrix"
    for services in matrices:
        assert sorted(services) == SERVICES


@pytest.mark.parametrize("name", ["images.yml", "security.yml"])
def test_images_are_built_per_service_from_the_shared_dockerfile(name: str) -> None:
    builds = [
        step["with"]
        for _, step in steps_of(load_workflow(WORKFLOWS_DIR / name))
        if step.get("uses", "").startswith("docker/build-push-action@")
    ]
    assert builds, f"{name}: no docker/build-push-action step"
    for build in builds:
        assert build["file"] == "deploy/docker/Dockerfile"
        assert build["build-args"] == "SERVICE=${{ matrix.service }}"


def test_the_dockerfile_the_workflows_build_takes_the_service_argument() -> None:
    dockerfile = REPO_ROOT / "deploy" / "docker" / "Dockerfile"
    assert dockerfile.is_file(), "images.yml and security.yml build deploy/docker/Dockerfile"
    assert re.search(r"^ARG SERVICE\b", dockerfile.read_text(), re.MULTILINE)


def test_workflows_call_only_make_targets_that_exist() -> None:
    known = makefile_targets()
    called: dict[str, set[str]] = {}
    for path in WORKFLOW_FILES:
        for _, step in steps_of(load_workflow(path)):
            for match in re.finditer(r"\bmake\s+((?:-\S+\s+)*)([a-z][\w-]*)", step.get("run", "")):
                called.setdefault(match.group(2), set()).add(path.name)
    unknown = {target: sorted(names) for target, names in called.items() if target not in known}
    assert not unknown, f"workflows call Makefile targets that do not exist: {unknown}"


# --- Makefile -------------------------------------------------------------------------------

_RULE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_ -]*?)\s*::?(?!=)(.*)$")


@cache
def makefile_targets() -> frozenset[str]:
    """Names of the Makefile's rules; file targets (`.tools/bin/uv`, `$(VENV)/.synced`) and
    special targets (`.PHONY`) start with another character and are left out."""
    targets: set[str] = set()
    for line in MAKEFILE.read_text(encoding="utf-8").splitlines():
        if line.startswith(("\t", "#", " ")):
            continue
        match = _RULE.match(line)
        if match is None:
            continue
        after_colon = match.group(2).split("##")[0]
        if re.match(r"^\s*[\w.-]+\s*[:?+]?=", after_colon):
            continue  # a target-specific variable, not a rule
        targets.update(match.group(1).split())
    return frozenset(targets)


def make_help() -> str:
    # Run as a user would, not as a sub-make of `make test`.
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_the_makefile_parser_sees_rules_only() -> None:
    targets = makefile_targets()
    assert {"help", "install", "test", "lint", "postgres-stop", "postgres-start"} <= targets
    assert not {name for name in targets if name.isupper() or "/" in name or "$" in name}


def test_the_makefile_has_the_targets_the_issue_names() -> None:
    assert makefile_targets() >= EXPECTED_TARGETS


def test_make_help_lists_every_target_with_a_description() -> None:
    listed: dict[str, str] = {}
    for line in make_help().splitlines():
        if not line.strip():
            continue
        match = re.match(r"^\s*make\s+(\S+)\s+(\S.*)$", line)
        assert match, f"`make help` line without a description: {line!r}"
        assert match.group(1) not in listed, f"listed twice: {match.group(1)}"
        listed[match.group(1)] = match.group(2)
    assert set(listed) == makefile_targets(), (
        f"not listed: {sorted(makefile_targets() - set(listed))}; "
        f"listed but not a rule: {sorted(set(listed) - makefile_targets())}"
    )


def test_the_default_goal_is_help() -> None:
    assert re.search(r"^\.DEFAULT_GOAL\s*:=\s*help\s*$", MAKEFILE.read_text(), re.MULTILINE)


def test_clean_keeps_the_virtual_environment() -> None:
    recipe = re.search(r"^clean:.*\n((?:\t.*\n)+)", MAKEFILE.read_text(), re.MULTILINE)
    assert recipe
    assert ".venv" not in recipe.group(1)
    assert "$(VENV)" not in recipe.group(1)


# --- .ci/run --------------------------------------------------------------------------------


def test_ci_run_is_executable() -> None:
    assert CI_RUN.is_file()
    assert os.access(CI_RUN, os.X_OK)
    assert CI_RUN.read_text().startswith("#!/usr/bin/env bash\n")


def test_ci_run_lints_and_tests() -> None:
    commands = [
        line.strip()
        for line in CI_RUN.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert any(re.match(r"^make lint\b", command) for command in commands)
    assert any(re.match(r"^make test\b", command) for command in commands)


def test_ci_run_installs_the_tools_of_the_deploy_checks() -> None:
    text = CI_RUN.read_text()
    assert "promtool" in text
    assert "prometheus" in text
    assert "--no-install-recommends" in text
    assert "kubectl" in text


def test_ci_run_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(CI_RUN)], check=True, timeout=30)
