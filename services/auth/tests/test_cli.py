"""The production path: migrate, create-admin, create-service-account, rotate-keys,
then a production-mode app serves what the CLI made."""

from __future__ import annotations

from pathlib import Path

import jwt

from flightdeck_auth.app import create_app
from flightdeck_auth.settings import Settings
from flightdeck_common.testing.service_checks import run_service_cli, running_app

SECRET_KEY = "an-operator-chosen-secret-key-of-48-characters!!"
ADMIN_PASSWORD = "operator-picked-passphrase-9"


async def test_production_bootstrap_through_the_cli(
    postgres_database_url: str, tmp_path: Path
) -> None:
    env = {
        "ENVIRONMENT": "production",
        "FLIGHTDECK_AUTH_DATABASE_URL": postgres_database_url,
        "FLIGHTDECK_AUTH_SECRET_KEY": SECRET_KEY,
        "FLIGHTDECK_AUTH_NEW_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    assert run_service_cli("auth", "migrate", env=env, cwd=tmp_path).returncode == 0
    created = run_service_cli("auth", "create-admin", "Root", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    weak = run_service_cli(
        "auth",
        "create-admin",
        "other",
        env={**env, "FLIGHTDECK_AUTH_NEW_ADMIN_PASSWORD": "password123"},
        cwd=tmp_path,
    )
    assert weak.returncode != 0
    account = run_service_cli(
        "auth",
        "create-service-account",
        "admin",
        "--audience",
        "flightdeck:auth-users",
        env=env,
        cwd=tmp_path,
    )
    assert account.returncode == 0, account.stderr
    secret = next(
        line.split("=", 1)[1]
        for line in account.stdout.splitlines()
        if line.startswith("client_secret=")
    )
    rotated = run_service_cli("auth", "rotate-keys", env=env, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr

    settings = Settings(
        environment="production",
        database_url=postgres_database_url,
        secret_key=SECRET_KEY,
        log_json=False,
    )
    app = create_app(settings)
    async with running_app(app) as client:
        assert len((await client.get("/auth/.well-known/jwks.json")).json()["keys"]) == 2
        login = await client.post(
            "/auth/login", json={"username": "root", "password": ADMIN_PASSWORD}
        )
        assert login.status_code == 200, login.text
        # Production: admins are confined until they enrol a second factor.
        claims = jwt.decode(login.json()["access_token"], options={"verify_signature": False})
        assert claims["mfa_enrolment_required"] is True
        token = await client.post(
            "/auth/service-token",
            data={
                "grant_type": "client_credentials",
                "client_id": "admin",
                "client_secret": secret,
            },
        )
        assert token.status_code == 200, token.text
        # No development bootstrap in production: the only admin is the one the CLI made.
        users = await client.get(
            "/auth/internal/users",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert [u["username"] for u in users.json()["items"]] == ["root"]
