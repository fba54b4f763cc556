"""Public keys for verifying access tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from flightdeck_auth.runtime import RuntimeDep
from flightdeck_auth.tokens.schemas import Jwks

router = APIRouter(prefix="/auth", tags=["tokens"])


@router.get(
    "/.well-known/jwks.json", response_model=Jwks, summary="Read the token signing keys (JWKS)"
)
async def read_jwks(rt: RuntimeDep, response: Response) -> dict[str, Any]:
    """The JSON Web Key Set: the current and previous signing keys."""
    response.headers["Cache-Control"] = "public, max-age=60"
    return await rt.keyring.jwks()
