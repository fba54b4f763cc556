"""Generate a Python client per service from the committed OpenAPI schemas.

    python -m flightdeck_common.clients_build                    # build/clients/<service>/
    python -m flightdeck_common.clients_build --out DIR auth     # one service, elsewhere

Each client is an installable project (``pyproject.toml`` + package) made by
openapi-python-client from ``openapi/<service>.json``: ``flightdeck-auth-client`` with the
package ``flightdeck_auth_client``, and so on. The schemas are a product, so the build is
strict: any warning the generator prints fails it (exit 1) with the generator's output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The same services, in the same order, as ``make openapi`` (kept literal: importing
# openapi_export would import FastAPI, which generating clients does not need).
SERVICES = ("auth", "pipeline", "admin")
DEFAULT_SCHEMA_DIR = Path("openapi")
DEFAULT_OUT_DIR = Path("build/clients")


class ClientBuildError(RuntimeError):
    """The generator failed or warned; the message holds its output."""


def project_name(service: str) -> str:
    return f"flightdeck-{service}-client"


def package_name(service: str) -> str:
    return f"flightdeck_{service}_client"


def generator_config(service: str) -> dict[str, object]:
    """openapi-python-client's config file for one service (written as JSON)."""
    return {
        "project_name_override": project_name(service),
        "package_name_override": package_name(service),
        # Remove unused imports and format; ruff comes from the same environment.
        "post_hooks": ["ruff check . --fix-only --quiet", "ruff format . --quiet"],
    }


@dataclass(frozen=True)
class GeneratedClient:
    service: str
    project_dir: Path
    """Put this directory on ``sys.path`` (or ``pip install`` it) to import ``package``."""
    package: str


def _generator() -> list[str]:
    return [sys.executable, "-m", "openapi_python_client"]


def _environment() -> dict[str, str]:
    """The current environment with this interpreter's scripts (ruff) first on PATH."""
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env["NO_COLOR"] = "1"
    return env


def generate(
    services: Sequence[str] = SERVICES,
    out_dir: Path = DEFAULT_OUT_DIR,
    schema_dir: Path = DEFAULT_SCHEMA_DIR,
) -> list[GeneratedClient]:
    """Generate the clients concurrently into ``out_dir/<service>/`` (replacing old ones).

    Raises :class:`ClientBuildError` when a generation fails or prints a warning.
    """
    unknown = [service for service in services if service not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; known: {', '.join(SERVICES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    clients = [
        GeneratedClient(service, (out_dir / service).absolute(), package_name(service))
        for service in services
    ]
    with tempfile.TemporaryDirectory(prefix="flightdeck-clients-") as config_dir:
        running = []
        for client in clients:
            schema = schema_dir / f"{client.service}.json"
            if not schema.is_file():
                raise ClientBuildError(f"{schema}: no such schema (run `make openapi`)")
            config = Path(config_dir) / f"{client.service}.json"
            config.write_text(json.dumps(generator_config(client.service)), encoding="utf-8")
            command = [
                *_generator(),
                "generate",
                "--path",
                str(schema),
                "--config",
                str(config),
                "--meta",
                "uv",
                "--output-path",
                str(client.project_dir),
                "--overwrite",
                "--fail-on-warning",
            ]
            process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            running.append((client, process))
        failures = []
        for client, process in running:
            output, _ = process.communicate()
            # The generator's own notes are "Generating <dir>"; anything else is a warning
            # or an error about the schema (or a post hook), and fails the build.
            noise = [
                line
                for line in output.splitlines()
                if line.strip() and not line.startswith("Generating ")
            ]
            if process.returncode != 0 or noise:
                failures.append(
                    f"{client.service}: openapi-python-client exited {process.returncode}:\n"
                    + output.strip()
                )
    if failures:
        raise ClientBuildError("\n\n".join(failures))
    return clients


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flightdeck_common.clients_build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("services", nargs="*", help=f"of {', '.join(SERVICES)} (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="default: build/clients/")
    parser.add_argument(
        "--schemas", type=Path, default=DEFAULT_SCHEMA_DIR, help="default: openapi/"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    try:
        clients = generate(args.services or SERVICES, args.out, args.schemas)
    except ClientBuildError as exc:
        print(exc, file=sys.stderr)
        print("client generation failed: fix the schema at its source", file=sys.stderr)
        return 1
    for client in clients:
        print(f"{client.service}: {client.package} in {client.project_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
