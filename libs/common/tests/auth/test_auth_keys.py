"""JWKS handling: JWK conversion, caching, refetch on unknown kid, rotation, auth outages."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from flightdeck_common.auth import (
    USER_AUDIENCE,
    AuthUnavailable,
    InvalidJwk,
    InvalidToken,
    JwksKeySource,
    TokenVerifier,
    load_jwk,
    public_jwk,
)
from flightdeck_common.auth.testing import TokenMinter


def test_public_jwk_round_trips_and_verifies_signatures() -> None:
    private = Ed25519PrivateKey.generate()
    jwk = public_jwk(private.public_key(), "k1")
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert jwk["alg"] == "EdDSA"
    assert jwk["use"] == "sig"
    assert jwk["kid"] == "k1"
    assert "=" not in jwk["x"]
    assert "d" not in jwk  # never the private part
    loaded = load_jwk(jwk)
    loaded.verify(private.sign(b"payload"), b"payload")  # raises if the key were wrong


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        {
            "kty": "OKP",
            "crv": "X25519",
            "x": _b64(X25519PrivateKey.generate().public_key().public_bytes_raw()),
        },
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "OKP", "crv": "Ed25519", "x": "not base64!"},
        {"kty": "OKP", "crv": "Ed25519", "x": _b64(b"short")},
        {"kty": "OKP", "crv": "Ed25519", "x": _b64(b"k" * 32), "use": "enc"},
        {"kty": "OKP", "crv": "Ed25519", "x": _b64(b"k" * 32), "alg": "HS256"},
    ],
)
def test_load_jwk_refuses_anything_but_ed25519_signature_keys(jwk: dict[str, Any]) -> None:
    with pytest.raises(InvalidJwk):
        load_jwk(jwk)


async def test_keys_are_fetched_lazily_once_and_cached(
    jwks_server: Any, key_source: JwksKeySource, verifier: TokenVerifier, minter: TokenMinter
) -> None:
    assert jwks_server.fetches == 0
    for _ in range(20):
        await verifier.verify(minter.user_token(), USER_AUDIENCE)
    assert jwks_server.fetches == 1
    assert key_source.kids == {minter.current_kid}


async def test_unknown_kid_refetches_once_then_is_refused_within_the_interval(
    jwks_server: Any, verifier: TokenVerifier, minter: TokenMinter, clock: Any
) -> None:
    await verifier.verify(minter.user_token(), USER_AUDIENCE)
    assert jwks_server.fetches == 1
    clock.advance(61)

    stranger = TokenMinter(kid="unpublished")
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(stranger.user_token(), USER_AUDIENCE)
    assert jwks_server.fetches == 2
    for _ in range(10):
        with pytest.raises(InvalidToken):
            await verifier.verify(stranger.user_token(), USER_AUDIENCE)
    assert jwks_server.fetches == 2

    clock.advance(61)
    with pytest.raises(InvalidToken):
        await verifier.verify(stranger.user_token(), USER_AUDIENCE)
    assert jwks_server.fetches == 3


async def test_concurrent_unknown_kids_share_a_single_fetch(
    jwks_server: Any, verifier: TokenVerifier
) -> None:
    jwks_server.delay = 0.05  # every verification arrives while the fetch is in flight
    strangers = [TokenMinter(kid=f"made-up-{i}") for i in range(50)]
    results = await asyncio.gather(
        *(verifier.verify(s.user_token(), USER_AUDIENCE) for s in strangers),
        return_exceptions=True,
    )
    assert all(isinstance(r, InvalidToken) for r in results)
    assert jwks_server.fetches == 1
    # And a second wave within the interval costs nothing.
    await asyncio.gather(
        *(verifier.verify(s.user_token(), USER_AUDIENCE) for s in strangers),
        return_exceptions=True,
    )
    assert jwks_server.fetches == 1


async def test_key_rotation(
    jwks_server: Any, verifier: TokenVerifier, minter: TokenMinter, clock: Any
) -> None:
    old_kid = minter.current_kid
    old_token = minter.user_token(sub="old")
    assert (await verifier.verify(old_token, USER_AUDIENCE)).sub == "old"

    # Auth rotates: the JWKS lists the new current key and the previous one.
    new_kid = minter.add_key("rotated")
    jwks_server.document = minter.jwks([new_kid, old_kid])
    new_token = minter.user_token(sub="new")
    # Within the refetch interval of the last fetch, the new kid is not looked up yet ...
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(new_token, USER_AUDIENCE)
    assert jwks_server.fetches == 1
    # ... afterwards, the first token with the new kid fetches the JWKS again.
    clock.advance(60)
    assert (await verifier.verify(new_token, USER_AUDIENCE)).sub == "new"
    assert (await verifier.verify(old_token, USER_AUDIENCE)).sub == "old"
    assert jwks_server.fetches == 2

    # Later the previous key is retired; once a refetch is allowed, its tokens stop working.
    jwks_server.document = minter.jwks([new_kid])
    clock.advance(61)
    third_kid = minter.add_key("third")
    jwks_server.document = minter.jwks([third_kid, new_kid])
    assert (await verifier.verify(minter.user_token(sub="3rd"), USER_AUDIENCE)).sub == "3rd"
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(old_token, USER_AUDIENCE)
    assert (await verifier.verify(new_token, USER_AUDIENCE)).sub == "new"


async def test_retired_key_stops_verifying_after_max_age_without_new_kids(
    jwks_server: Any, minter: TokenMinter, clock: Any
) -> None:
    source = JwksKeySource(
        jwks_server.url, jwks_server.http, min_refetch_interval=60, max_age=300, clock=clock
    )
    verifier = TokenVerifier(source)
    old_token = minter.user_token()
    await verifier.verify(old_token, USER_AUDIENCE)
    jwks_server.document = minter.jwks([minter.add_key("next")])
    clock.advance(299)
    await verifier.verify(old_token, USER_AUDIENCE)
    assert jwks_server.fetches == 1
    clock.advance(2)
    with pytest.raises(InvalidToken):
        await verifier.verify(old_token, USER_AUDIENCE)
    assert jwks_server.fetches == 2


@pytest.mark.parametrize("unreachable", [False, True])
async def test_cached_keys_keep_verifying_while_auth_is_down(
    jwks_server: Any, verifier: TokenVerifier, minter: TokenMinter, clock: Any, unreachable: bool
) -> None:
    await verifier.verify(minter.user_token(), USER_AUDIENCE)
    jwks_server.fail(unreachable=unreachable)
    for _ in range(3):
        clock.advance(601)  # past the refetch interval and the max age: refetches fail
        assert (await verifier.verify(minter.user_token(), USER_AUDIENCE)).sub == "1"
    assert jwks_server.fetches == (1 if unreachable else 4)


@pytest.mark.parametrize("unreachable", [False, True])
async def test_unknown_kid_while_auth_is_down_is_a_503(
    jwks_server: Any, verifier: TokenVerifier, minter: TokenMinter, clock: Any, unreachable: bool
) -> None:
    await verifier.verify(minter.user_token(), USER_AUDIENCE)
    jwks_server.fail(unreachable=unreachable)
    clock.advance(61)
    new_kid = minter.add_key("new")
    with pytest.raises(AuthUnavailable) as caught:
        await verifier.verify(minter.user_token(), USER_AUDIENCE)
    assert caught.value.status_code == 503
    assert caught.value.code == "auth_unavailable"
    # Within the retry delay the answer is still "unavailable" (not "invalid"), with no fetch.
    fetches = jwks_server.fetches
    with pytest.raises(AuthUnavailable):
        await verifier.verify(minter.user_token(), USER_AUDIENCE)
    assert jwks_server.fetches == fetches

    # Auth comes back: after the (short) retry delay the new key is fetched.
    jwks_server.recover()
    jwks_server.document = minter.jwks([new_kid])
    clock.advance(5)
    assert (await verifier.verify(minter.user_token(), USER_AUDIENCE)).sub == "1"


async def test_cold_start_with_auth_down_is_a_503(
    jwks_server: Any, verifier: TokenVerifier, minter: TokenMinter
) -> None:
    jwks_server.fail()
    with pytest.raises(AuthUnavailable):
        await verifier.verify(minter.user_token(), USER_AUDIENCE)


async def test_non_ed25519_keys_in_the_jwks_are_ignored(
    jwks_server: Any, key_source: JwksKeySource, minter: TokenMinter
) -> None:
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    numbers = rsa_public.public_numbers()
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwks_server.document = {
        "keys": [
            {"kty": "RSA", "kid": "rsa", "n": _b64(numbers.n.to_bytes(256, "big")), "e": "AQAB"},
            {
                "kty": "EC",
                "kid": "ec",
                "crv": "P-256",
                "x": _b64(ec_public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)),
            },
            {"kty": "OKP", "crv": "Ed25519", "x": "bad", "kid": "broken"},
            {"kty": "OKP", "crv": "Ed25519", "x": minter.jwks()["keys"][0]["x"]},  # no kid
            "not a key",
            *minter.jwks()["keys"],
        ]
    }
    assert await key_source.get("rsa") is None
    assert key_source.kids == {minter.current_kid}


@pytest.mark.parametrize(
    "document", [{"keys": []}, {"keys": "nope"}, {"no": "keys"}, ["a", "list"]]
)
async def test_a_broken_jwks_keeps_the_cached_keys(
    jwks_server: Any,
    key_source: JwksKeySource,
    verifier: TokenVerifier,
    minter: TokenMinter,
    clock: Any,
    document: Any,
) -> None:
    await verifier.verify(minter.user_token(), USER_AUDIENCE)
    jwks_server.document = document
    clock.advance(601)
    assert (await verifier.verify(minter.user_token(), USER_AUDIENCE)).sub == "1"
    assert jwks_server.fetches == 2
    assert key_source.kids == {minter.current_kid}
