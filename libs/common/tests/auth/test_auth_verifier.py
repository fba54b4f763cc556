"""TokenVerifier: what it accepts, and every way a token must be refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from flightdeck_common.auth import (
    AUTH_REVOCATIONS_AUDIENCE,
    USER_AUDIENCE,
    InvalidToken,
    MemoryRevocations,
    Role,
    TokenRevoked,
    TokenUse,
    TokenVerifier,
)
from flightdeck_common.auth.testing import TokenMinter


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)]
    )


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


async def _refused(verifier: TokenVerifier, token: str, audience: str = USER_AUDIENCE) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token, audience)
    assert type(caught.value) is InvalidToken
    detail = caught.value.detail or ""
    assert len(token) < 8 or token not in detail
    return detail


async def test_valid_user_token_yields_its_claims(
    verifier: TokenVerifier, minter: TokenMinter
) -> None:
    token = minter.user_token("42", Role.OPERATOR, username="bob")
    claims = await verifier.verify(token, USER_AUDIENCE)
    assert claims.sub == "42"
    assert claims.user_id == "42"
    assert claims.role is Role.OPERATOR
    assert claims.username == "bob"
    assert claims.token_use is TokenUse.ACCESS
    assert claims.aud == (USER_AUDIENCE,)
    assert claims.mfa_enrolment_required is False
    assert claims.exp - claims.iat == pytest.approx(900)
    assert abs(claims.issued_at.timestamp() - time.time()) < 5
    assert claims.raw["username"] == "bob"
    with pytest.raises(TypeError):
        claims.raw["role"] = "admin"  # type: ignore[index]


async def test_valid_service_token_with_several_audiences(
    verifier: TokenVerifier, minter: TokenMinter
) -> None:
    token = minter.service_token(
        "pipeline", ["flightdeck:admin-internal", AUTH_REVOCATIONS_AUDIENCE]
    )
    claims = await verifier.verify(token, AUTH_REVOCATIONS_AUDIENCE)
    assert claims.is_service
    assert claims.client_id == "pipeline"
    assert claims.user_id is None
    assert claims.role is None
    assert claims.aud == ("flightdeck:admin-internal", AUTH_REVOCATIONS_AUDIENCE)


async def test_expired_token_refused(verifier: TokenVerifier, minter: TokenMinter) -> None:
    token = minter.user_token(issued_at=time.time() - 1000, ttl=900)
    assert await _refused(verifier, token) == "Token expired."


async def test_leeway_tolerates_small_clock_skew(
    verifier: TokenVerifier, minter: TokenMinter
) -> None:
    expired_5s_ago = minter.user_token(issued_at=time.time() - 905, ttl=900)
    assert (await verifier.verify(expired_5s_ago, USER_AUDIENCE)).sub == "1"
    expired_30s_ago = minter.user_token(issued_at=time.time() - 930, ttl=900)
    await _refused(verifier, expired_30s_ago)


async def test_token_not_yet_valid_refused(verifier: TokenVerifier, minter: TokenMinter) -> None:
    now = time.time()
    assert await _refused(verifier, minter.user_token(nbf=now + 120)) == "Token not yet valid."
    # Issued "in the future" beyond the leeway is just as suspicious.
    await _refused(verifier, minter.user_token(issued_at=now + 120))


async def test_forged_signature_with_a_known_kid_refused(
    verifier: TokenVerifier, minter: TokenMinter
) -> None:
    attacker_key = Ed25519PrivateKey.generate()
    forged = minter.sign(
        minter.claims(sub="1", audience=USER_AUDIENCE, token_use="access", role="admin"),
        key=attacker_key,
    )
    assert await _refused(verifier, forged) == "Invalid token signature."


async def test_tampered_payload_refused(verifier: TokenVerifier, minter: TokenMinter) -> None:
    header, _, signature = minter.user_token(role=Role.VIEWER).split(".")
    claims = minter.claims(sub="1", audience=USER_AUDIENCE, token_use="access", role="admin")
    payload = _b64(json.dumps(claims).encode())
    assert await _refused(verifier, f"{header}.{payload}.{signature}") == "Invalid token signature."


@pytest.mark.parametrize("signature", [b"", b"not-a-signature"])
async def test_alg_none_refused(
    verifier: TokenVerifier, minter: TokenMinter, signature: bytes
) -> None:
    claims = minter.claims(sub="1", audience=USER_AUDIENCE, token_use="access", role="admin")
    token = _compact({"alg": "none", "typ": "JWT", "kid": minter.current_kid}, claims, signature)
    await _refused(verifier, token)


async def test_hs256_keyed_with_the_public_key_refused(
    verifier: TokenVerifier, minter: TokenMinter
) -> None:
    """The algorithm-confusion attack: HMAC "signed" with the (public) verification key."""
    public_key = minter.keys[minter.current_kid].public_key()
    claims = minter.claims(sub="1", audience=USER_AUDIENCE, token_use="access", role="admin")
    header = {"alg": "HS256", "typ": "JWT", "kid": minter.current_kid}
    secrets = [
        public_key.public_bytes(Encoding.Raw, PublicFormat.Raw),
        public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        minter.jwks()["keys"][0]["x"].encode(),
        json.dumps(minter.jwks()["keys"][0]).encode(),
    ]
    for secret in secrets:
        detail = await _refused(verifier, _hs256(header, claims, secret))
        assert detail == "Unsupported token algorithm."


@pytest.mark.parametrize("alg", ["RS256", "ES256", "HS512", "EDDSA", "Ed25519", None])
async def test_other_algorithms_refused_before_any_key_lookup(
    verifier: TokenVerifier, minter: TokenMinter, jwks_server: Any, alg: str | None
) -> None:
    claims = minter.claims(sub="1", audience=USER_AUDIENCE, token_use="access", role="viewer")
    header = {"typ": "JWT", "kid": "whatever"} | ({"alg": alg} if alg else {})
    await _refused(verifier, _compact(header, claims, b"x" * 64))
    assert jwks_server.fetches == 0


async def test_wrong_audience_refused(verifier: TokenVerifier, minter: TokenMinter) -> None:
    user_token = minter.user_token()
    detail = await _refused(verifier, user_token, AUTH_REVOCATIONS_AUDIENCE)
    assert detail == "Token not valid for this audience."
    service_token = minter.service_token(audiences=["flightdeck:admin-internal"])
    await _refused(verifier, service_token, AUTH_REVOCATIONS_AUDIENCE)


async def test_wrong_issuer_refused(key_source: Any, minter: TokenMinter) -> None:
    strict = TokenVerifier(key_source, issuer="flightdeck-auth")
    other = TokenMinter(issuer="someone-else")
    other.keys = minter.keys  # same keys, different issuer
    other.current_kid = minter.current_kid
    assert await _refused(strict, other.user_token()) == "Token from an unexpected issuer."


@pytest.mark.parametrize("claim", ["sub", "jti", "iat", "exp", "token_use", "iss", "aud"])
async def test_missing_required_claim_refused(
    verifier: TokenVerifier, minter: TokenMinter, claim: str
) -> None:
    detail = await _refused(verifier, minter.user_token(omit=[claim]))
    assert detail == f"Token lacks the {claim!r} claim."


@pytest.mark.parametrize(
    ("overrides", "expected_detail"),
    [
        ({"token_use": "refresh"}, "Token is not an access or service token."),
        ({"token_use": "mfa"}, "Token is not an access or service token."),
        ({"role": "superuser"}, "Token has no valid 'role' claim."),
        ({"role": None}, "Token has no valid 'role' claim."),
        ({"sub": "svc:pipeline"}, "Malformed access token."),
        ({"sub": ""}, "Token has an empty 'sub' or 'jti'."),
        ({"sub": 42}, "Invalid token."),
        ({"jti": ""}, "Token has an empty 'sub' or 'jti'."),
        ({"exp": "tomorrow"}, "Malformed token."),
        (
            {"mfa_enrolment_required": "false"},
            "Token has an invalid 'mfa_enrolment_required' claim.",
        ),
        ({"username": ["a"]}, "Token has an invalid 'username' claim."),
        ({"aud": [USER_AUDIENCE, 7]}, "Token not valid for this audience."),
    ],
)
async def test_malformed_claims_refused(
    verifier: TokenVerifier, minter: TokenMinter, overrides: dict[str, Any], expected_detail: str
) -> None:
    claims = minter.claims(
        sub="1", audience=USER_AUDIENCE, token_use="access", role="viewer", username="alice"
    )
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    assert await _refused(verifier, minter.sign(claims)) == expected_detail


async def test_service_token_must_name_a_service_subject(
    verifier: TokenVerifier, minter: TokenMinter
) -> None:
    claims = minter.claims(sub="7", audience=[AUTH_REVOCATIONS_AUDIENCE], token_use="service")
    await _refused(verifier, minter.sign(claims), AUTH_REVOCATIONS_AUDIENCE)
    with_role = minter.claims(
        sub="svc:x", audience=[AUTH_REVOCATIONS_AUDIENCE], token_use="service", role="admin"
    )
    await _refused(verifier, minter.sign(with_role), AUTH_REVOCATIONS_AUDIENCE)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "a.b.c",
        "....",
        "eyJhbGciOiJFZERTQSJ9.e30.c2ln=",
        "eyJhbGciOiJFZERTQSJ9 .e30.c2ln",
        "ëyJ.e30.c2ln",
        "Bearer eyJhbGciOiJFZERTQSJ9.e30.c2ln",
        _b64(b"[1,2]") + ".e30.c2ln",
        _b64(b"not json") + ".e30.c2ln",
    ],
)
async def test_garbage_refused(verifier: TokenVerifier, token: str) -> None:
    await _refused(verifier, token)


async def test_oversized_token_refused_without_parsing(
    verifier: TokenVerifier, minter: TokenMinter, jwks_server: Any
) -> None:
    token = minter.user_token(padding="x" * 9000)
    assert len(token) > 8 * 1024
    assert await _refused(verifier, token) == "Token too large."
    assert jwks_server.fetches == 0


async def test_missing_or_odd_kid_refused(verifier: TokenVerifier, minter: TokenMinter) -> None:
    claims = minter.claims(sub="1", audience=USER_AUDIENCE, token_use="access", role="viewer")
    key = minter.keys[minter.current_kid]
    no_kid = jwt.encode(claims, key, algorithm="EdDSA")
    assert await _refused(verifier, no_kid) == "Token has no valid key id."
    huge_kid = minter.sign(claims, headers={"kid": "k" * 500})
    await _refused(verifier, huge_kid)


async def test_crit_header_refused(verifier: TokenVerifier, minter: TokenMinter) -> None:
    claims = minter.claims(sub="1", audience=USER_AUDIENCE, token_use="access", role="viewer")
    token = minter.sign(claims, headers={"crit": ["exp"]})
    await _refused(verifier, token)


async def test_revoked_token_raises_token_revoked(key_source: Any, minter: TokenMinter) -> None:
    revocations = MemoryRevocations()
    verifier = TokenVerifier(key_source, revocations=revocations)
    token = minter.user_token()
    other = minter.user_token()
    claims = await verifier.verify(token, USER_AUDIENCE)
    await revocations.revoke_jti(claims.jti, claims.exp)
    with pytest.raises(TokenRevoked) as caught:
        await verifier.verify(token, USER_AUDIENCE)
    assert caught.value.code == "token_revoked"
    assert caught.value.status_code == 401
    assert (await verifier.verify(other, USER_AUDIENCE)).sub == "1"


async def test_verified_token_is_not_checked_again(
    verifier: TokenVerifier, minter: TokenMinter, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = minter.user_token("42", Role.OPERATOR)
    first = await verifier.verify(token, USER_AUDIENCE)

    def no_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a verified token was decoded again")

    monkeypatch.setattr(jwt, "decode", no_decode)
    assert await verifier.verify(token, USER_AUDIENCE) is first
    # Another audience is another verification (and is refused).
    monkeypatch.undo()
    await _refused(verifier, token, AUTH_REVOCATIONS_AUDIENCE)


async def test_verified_token_refused_once_its_key_is_withdrawn(minter: TokenMinter) -> None:
    keys = minter.key_source()
    verifier = TokenVerifier(keys)
    token = minter.user_token()
    await verifier.verify(token, USER_AUDIENCE)
    keys.remove(minter.current_kid)
    assert await _refused(verifier, token) == "Token signed by an unknown key."


async def test_verified_token_refused_once_expired(minter: TokenMinter) -> None:
    verifier = TokenVerifier(minter.key_source(), leeway_seconds=0)
    now = time.time()
    # exp 2-3 s ahead: time enough for the first check on a loaded machine (within the
    # next second was too close once), and a short wait for the expiry.
    token = minter.user_token(issued_at=now - 897, ttl=900)
    await verifier.verify(token, USER_AUDIENCE)
    exp = int(jwt.decode(token, options={"verify_signature": False})["exp"])
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.01)
    assert await _refused(verifier, token) == "Token expired."
