"""Write the development cluster's secrets (``secrets/*.env``) with fresh random values.

Nothing guessable is committed: each clone makes its own. Files that exist are kept, so
running it again changes nothing (delete ``secrets/`` to re-key). ``make k8s-dev-secrets``
and ``make k8s-render OVERLAY=dev`` run it; the files are ignored by git.

    python deploy/k8s/overlays/dev/generate_secrets.py
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

SECRETS_DIR = Path(__file__).resolve().parent / "secrets"
HEADER = "# Generated for this clone's development cluster (overlays/dev); never commit.\n"


def _token() -> str:
    return secrets.token_urlsafe(32)


def generate(directory: Path = SECRETS_DIR) -> list[Path]:
    """Create the missing files in ``directory``; returns the files written."""
    names = ("postgres", "shared", "auth", "pipeline", "admin")
    if all((directory / f"{name}.env").exists() for name in names):
        return []
    # One set of values, consistent across the files: all of them are written together.
    db_password = _token()
    pipeline_client, admin_client = _token(), _token()

    def db_url(service: str) -> str:
        return f"postgresql+asyncpg://flightdeck:{db_password}@postgres:5432/flightdeck_{service}"

    contents = {
        "postgres": {"POSTGRES_USER": "flightdeck", "POSTGRES_PASSWORD": db_password},
        "shared": {"REDIS_URL": "redis://redis:6379/0"},
        "auth": {
            "FLIGHTDECK_AUTH_DATABASE_URL": db_url("auth"),
            "FLIGHTDECK_AUTH_SECRET_KEY": _token(),
            "FLIGHTDECK_AUTH_BOOTSTRAP_SERVICE_ACCOUNTS": (
                f"pipeline:{pipeline_client}:flightdeck:auth-revocations flightdeck:admin-internal,"
                f"admin:{admin_client}:flightdeck:auth-revocations flightdeck:auth-users"
            ),
        },
        "pipeline": {
            "FLIGHTDECK_PIPELINE_DATABASE_URL": db_url("pipeline"),
            "FLIGHTDECK_PIPELINE_GITHUB_WEBHOOK_SECRETS": _token(),
            "FLIGHTDECK_PIPELINE_SERVICE_CLIENT_SECRET": pipeline_client,
        },
        "admin": {
            "FLIGHTDECK_ADMIN_DATABASE_URL": db_url("admin"),
            "FLIGHTDECK_ADMIN_SERVICE_CLIENT_SECRET": admin_client,
            "FLIGHTDECK_ADMIN_AUDIT_CHAIN_KEY": _token(),
            # A 32-byte Ed25519 seed, base64url: the head signing key.
            "FLIGHTDECK_ADMIN_AUDIT_SIGNING_KEY": _token(),
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, values in contents.items():
        path = directory / f"{name}.env"
        path.write_text(HEADER + "".join(f"{key}={value}\n" for key, value in values.items()))
        path.chmod(0o600)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in generate():
        print(f"wrote {path}", file=sys.stderr)
