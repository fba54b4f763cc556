"""Settings of the admin service (env prefix `FLIGHTDECK_ADMIN_`)."""

from functools import lru_cache
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from flightdeck_admin.audit.keys import signing_key_problem
from flightdeck_common.auth.claims import AUTH_REVOCATIONS_AUDIENCE, AUTH_USERS_AUDIENCE
from flightdeck_common.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FLIGHTDECK_ADMIN_")

    service_name: ClassVar[str] = "admin"
    public_prefix: ClassVar[str] = "/admin"
    required_secrets: ClassVar[tuple[str, ...]] = (
        "service_client_secret",
        "audit_chain_key",
        "audit_signing_key",
    )
    # Admin follows revocations and administers users (registrations, roles, approval keys).
    auth_audiences: ClassVar[tuple[str, ...]] = (AUTH_REVOCATIONS_AUDIENCE, AUTH_USERS_AUDIENCE)

    # Registration requests are public: a strict limit per client IP.
    rate_limit_registration: str = "5/hour"
    # Registration passwords are hashed here and handed to auth as hashes, so the pepper
    # must be auth's (FLIGHTDECK_AUTH_PASSWORD_PEPPER); unset when auth has none.
    password_pepper: SecretStr | None = None
    # A signed review decision is accepted when its signed_at is this close to our clock.
    approval_max_skew_seconds: int = Field(300, ge=10, le=3600)
    # An approval that creates the account holds the request this long at most; a claim
    # older than that was abandoned (the process died) and another approval may take it.
    approval_claim_timeout_seconds: int = Field(120, ge=10, le=3600)
    # Audit chain anchoring (README: Audit chain). The chain key keys every row's hash
    # (HMAC-SHA256) and must not be stored in admin's database; the signing key (Ed25519:
    # a PKCS#8 PEM, or its 32-byte seed on one line) signs the published chain head. Both
    # required in production; development derives fixed, publicly known ones (a development
    # chain is not protected).
    audit_chain_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the audit hash chain (at least 32 characters)."
    )
    audit_signing_key: SecretStr | None = Field(
        None,
        description=(
            "Ed25519 private key that signs the audit chain head: PKCS#8 PEM, or its "
            "32-byte seed in hex or base64 (e.g. `openssl rand -base64 32`)."
        ),
    )
    audit_head_sign_interval_seconds: float = Field(
        300.0, ge=1, le=86400, description="How often the chain head is signed and logged."
    )

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        # Unset is reported by required_secrets; a set value must also be a usable key.
        problem = signing_key_problem(self.audit_signing_key)
        key = self.audit_signing_key
        if problem is not None and key is not None and key.get_secret_value().strip():
            problems.append(f"FLIGHTDECK_ADMIN_AUDIT_SIGNING_KEY {problem}")
        return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
