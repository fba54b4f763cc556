"""Write (or check) the OpenAPI schema of every service: ``openapi/<service>.json``.

    python -m flightdeck_common.openapi_export            # write the files (make openapi)
    python -m flightdeck_common.openapi_export --check    # exit 1 when a file is stale

Schemas are committed so that every change of the API shows up in review as a diff. Each
app is built with ``create_app(Settings(...))`` and asked for ``app.openapi()``; the
lifespan never runs, so no database, Redis or other service is needed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

# service name -> its package (``<package>.app:create_app``, ``<package>.settings:Settings``).
SERVICES: dict[str, str] = {
    "auth": "flightdeck_auth",
    "pipeline": "flightdeck_pipeline",
    "admin": "flightdeck_admin",
}
DEFAULT_DIR = Path("openapi")


def build_app(service: str) -> FastAPI:
    """The service's app, built from fixed settings: the environment and ``.env`` do not
    change the schema, and development mode needs no secrets."""
    package = SERVICES[service]
    # Imported by name: libs/common does not depend on the services it documents.
    settings_class: Any = importlib.import_module(f"{package}.settings").Settings
    create_app: Any = importlib.import_module(f"{package}.app").create_app
    settings = settings_class(
        _env_file=None, environment="development", log_json=False, sentry_dsn=None
    )
    app = create_app(settings)
    assert isinstance(app, FastAPI)
    return app


def live_schema(service: str) -> dict[str, Any]:
    """The OpenAPI document the service serves at ``/<prefix>/openapi.json``."""
    return build_app(service).openapi()


def render(schema: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_path(service: str, directory: Path = DEFAULT_DIR) -> Path:
    return directory / f"{service}.json"


def stale_files(directory: Path = DEFAULT_DIR) -> list[Path]:
    """The schema files that are missing or differ from the live schemas."""
    stale = []
    for service in SERVICES:
        path = schema_path(service, directory)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != render(live_schema(service)):
            stale.append(path)
    return stale


def write_all(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every service's schema; return the files whose content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for service in SERVICES:
        path = schema_path(service, directory)
        text = render(live_schema(service))
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flightdeck_common.openapi_export", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="where the files are (default: openapi/)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a file is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print("run `make openapi` and review the diff", file=sys.stderr)
            return 1
        print(f"{len(SERVICES)} schemas in {args.dir}/ are up to date")
        return 0
    changed = write_all(args.dir)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print(f"{len(SERVICES)} schemas in {args.dir}/ were already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
