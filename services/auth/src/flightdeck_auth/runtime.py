"""The auth service's long-lived collaborators, made in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from flightdeck_auth.security.risk import RiskRules
from flightdeck_auth.security.secret_box import SecretBox
from flightdeck_auth.security.throttle import LoginThrottle
from flightdeck_auth.settings import Settings
from flightdeck_auth.tokens.issuer import TokenIssuer
from flightdeck_auth.tokens.keyring import KeyRing
from flightdeck_auth.tokens.revocations import Revoker
from flightdeck_common.dependencies import inline
from flightdeck_common.passwords import PasswordHasher


@dataclass
class AuthRuntime:
    settings: Settings
    hasher: PasswordHasher
    box: SecretBox
    keyring: KeyRing
    issuer: TokenIssuer
    throttle: LoginThrottle
    revoker: Revoker
    risk_rules: RiskRules


def get_runtime(request: Request) -> AuthRuntime:
    runtime: AuthRuntime = request.app.state.auth_runtime
    return runtime


RuntimeDep = Annotated[AuthRuntime, Depends(inline(get_runtime))]
