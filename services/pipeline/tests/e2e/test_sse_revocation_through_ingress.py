"""Through Traefik into the real services: a live event stream ends soon after its user
logs out (the access token is revoked at auth; pipeline learns it from auth's revocation
feed and re-checks at its next heartbeat), not when the token expires."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from flightdeck_common.devstack.stack import Stack
from flightdeck_common.testing.stack_users import create_user

pytestmark = pytest.mark.e2e

# Pipeline's default heartbeat (15 s) + the revocation feed's interval (3 s) + slack.
ENDS_WITHIN = 30.0


def test_stream_ends_after_logout_not_at_token_expiry(flightdeck_stack: Stack) -> None:
    with httpx.Client(base_url=flightdeck_stack.ingress_url, timeout=15, trust_env=False) as http:
        username, password = create_user(flightdeck_stack, http, "viewer", prefix="e2e-sse")
        login = http.post("/auth/login", json={"username": username, "password": password})
        assert login.status_code == 200, login.text
        pair = login.json()
        assert pair["expires_in"] > 5 * 60  # expiry cannot be what ends the stream below
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        connected = threading.Event()
        ended_at: list[float] = []

        def listen() -> None:
            with (
                httpx.Client(
                    base_url=flightdeck_stack.ingress_url,
                    timeout=ENDS_WITHIN + 10,
                    trust_env=False,
                ) as sse,
                sse.stream(
                    "GET", "/pipelines/events", headers={**headers, "Accept": "text/event-stream"}
                ) as stream,
            ):
                assert stream.status_code == 200
                connected.set()
                for _ in stream.iter_lines():
                    pass
            ended_at.append(time.monotonic())

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert connected.wait(10)
        time.sleep(1.0)
        assert listener.is_alive()
        logged_out_at = time.monotonic()
        out = http.post(
            "/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=headers
        )
        assert out.status_code == 204, out.text
        listener.join(ENDS_WITHIN)
        assert not listener.is_alive(), "the stream of a logged-out user is still open"
        assert ended_at
        assert ended_at[0] - logged_out_at < ENDS_WITHIN
        # And the token is refused outright on a new connection.
        again = http.get("/pipelines/events", headers=headers)
        assert again.status_code == 401
