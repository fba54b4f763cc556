"""The audit chain is anchored outside admin's database (SQLite and PostgreSQL).

The attack these tests replay: someone who can write admin's database deletes a row,
renumbers the rest, re-hashes them and moves the head. With a plain sha256 chain that gave
``valid: true``. Now the hash is keyed with a secret the database does not hold, and the
head is signed and published: a rewrite without the key breaks every re-hashed row, and a
rewrite with a stolen key no longer contains a head published earlier.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr
from sqlalchemy import delete, select, update

from flightdeck_admin.audit.chain import (
    ChainNotRekeyable,
    canonical_json,
    chained_fields,
    event_hash,
    rekey_chain,
    unkeyed_event_hash,
    verify_chain,
)
from flightdeck_admin.audit.head import log_signed_head, sign_head
from flightdeck_admin.audit.keys import chain_keys
from flightdeck_admin.audit.models import GENESIS_HASH, AuditChainHead, AuditEventRow
from flightdeck_admin.audit.repository import ChainHead
from flightdeck_admin.settings import Settings
from flightdeck_common.auth.claims import Role
from flightdeck_common.db import session_scope

AdminApi = Any
CHAIN_KEY = "an audit chain key that lives in the secret store, not the db"
SIGNING_SEED = bytes(range(32))
VERIFY = "/admin/audit-events/verify"
HEAD = "/admin/audit-events/head"
Hasher = Callable[[str, Mapping[str, Any]], str]


@pytest.fixture
def admin_settings() -> dict[str, Any]:
    return {"audit_chain_key": CHAIN_KEY, "audit_signing_key": SIGNING_SEED.hex()}


def sha256_chain(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """What someone without the chain key computes (the old, unkeyed chain)."""
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


def keyed_with(key: str) -> Hasher:
    return lambda prev_hash, fields: event_hash(prev_hash, fields, key.encode())


async def rewrite_without(api: AdminApi, removed_seq: int, hasher: Hasher) -> None:
    """Delete row ``removed_seq``, renumber the later rows, re-hash all, move the head."""
    async with session_scope(api.sessionmaker) as session:
        rows = (await session.scalars(select(AuditEventRow).order_by(AuditEventRow.seq))).all()
        kept = [
            {c.name: getattr(row, c.key) for c in AuditEventRow.__table__.columns}
            for row in rows
            if row.seq != removed_seq
        ]
        await session.execute(delete(AuditEventRow))
        prev_hash = GENESIS_HASH
        for seq, values in enumerate(kept, start=1):
            values.update(seq=seq, prev_hash=prev_hash)
            values["hash"] = prev_hash = hasher(prev_hash, chained_fields(values))
            session.add(AuditEventRow(**values))
        await session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == 1)
            .values(seq=len(kept), hash=prev_hash)
        )


async def verify(api: AdminApi, **head: Any) -> dict[str, Any]:
    params = {f"head_{name}": value for name, value in head.items() if name != "public_key"}
    response = await api.client.get(VERIFY, params=params, headers=api.admin_headers())
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_an_account_submits_events_of_its_own_service_only(
    admin_api: AdminApi, new_event: Any
) -> None:
    forged = [new_event(service="pipeline"), new_event(service="auth", type="auth.user.created")]
    refused = await admin_api.ingest(forged, admin_api.service_headers("pipeline"))
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "audit_service_mismatch"
    assert "'auth'" in refused.json()["detail"]
    listed = await admin_api.client.get("/admin/audit-events", headers=admin_api.admin_headers())
    assert listed.json()["items"] == []  # nothing of the batch was chained

    own = await admin_api.ingest([new_event(service="admin")], admin_api.service_headers("admin"))
    assert own.status_code == 200, own.text
    [row] = (
        await admin_api.client.get("/admin/audit-events", headers=admin_api.admin_headers())
    ).json()["items"]
    assert (row["service"], row["source"]) == ("admin", "admin")


async def test_a_rewrite_rehashed_without_the_chain_key_is_detected(
    admin_api: AdminApi, new_event: Any
) -> None:
    await admin_api.ingest([new_event() for _ in range(4)])
    assert (await verify(admin_api))["valid"] is True

    await rewrite_without(admin_api, 2, sha256_chain)  # the demonstrated attack
    result = await verify(admin_api)
    assert (result["valid"], result["checked"], result["first_invalid_seq"]) == (False, 0, 1)
    assert "without the chain key" in result["reason"]
    assert result["first_invalid_source"] == "pipeline"

    await rewrite_without(admin_api, 2, keyed_with("a guessed key"))
    guessed = await verify(admin_api)
    assert (guessed["valid"], guessed["first_invalid_seq"]) == (False, 1)
    assert "modified" in guessed["reason"]


async def test_a_rewrite_with_the_stolen_key_is_detected_against_the_published_head(
    admin_api: AdminApi, new_event: Any
) -> None:
    events = [new_event() for _ in range(4)]
    await admin_api.ingest(events)
    response = await admin_api.client.get(HEAD, headers=admin_api.admin_headers())
    assert response.status_code == 200, response.text
    published = response.json()
    assert published["seq"] == 4
    # Anyone can check it with the public key alone (no call to admin).
    public_key = serialization.load_pem_public_key(published["public_key"].encode())
    assert isinstance(public_key, Ed25519PublicKey)
    message = f"{published['seq']}:{published['hash']}:{published['signed_at']}".encode()
    public_key.verify(base64.b64decode(published["signature"]), message)
    expected_key = Ed25519PrivateKey.from_private_bytes(SIGNING_SEED).public_key()
    assert public_key.public_bytes_raw() == expected_key.public_bytes_raw()

    intact = await verify(admin_api, **published)
    assert (intact["valid"], intact["published_head_matched"], intact["checked"]) == (True, True, 4)

    fifth = new_event()
    await admin_api.ingest([fifth])  # the chain grew since: still contains the head
    assert (await verify(admin_api, **published))["published_head_matched"] is True

    await rewrite_without(admin_api, 2, keyed_with(CHAIN_KEY))
    assert (await verify(admin_api))["valid"] is True  # consistent in itself ...
    rewritten = await verify(admin_api, **published)  # ... but not with what was published
    assert (rewritten["valid"], rewritten["published_head_matched"]) == (False, False)
    assert rewritten["first_invalid_seq"] == 4
    assert rewritten["first_invalid_id"] == fifth["id"]  # row 4 holds another event now
    assert "rewritten" in rewritten["reason"]


async def test_a_rewrite_that_shortens_the_chain_below_the_published_head_is_detected(
    admin_api: AdminApi, new_event: Any
) -> None:
    await admin_api.ingest([new_event() for _ in range(3)])
    published = (await admin_api.client.get(HEAD, headers=admin_api.admin_headers())).json()
    await rewrite_without(admin_api, 3, keyed_with(CHAIN_KEY))
    result = await verify(admin_api, **published)
    assert (result["valid"], result["published_head_matched"]) == (False, False)
    assert "now ends at 2" in result["reason"]


async def test_a_head_not_signed_by_the_audit_key_is_refused(
    admin_api: AdminApi, new_event: Any
) -> None:
    await admin_api.ingest([new_event() for _ in range(2)])
    published = (await admin_api.client.get(HEAD, headers=admin_api.admin_headers())).json()
    other = Ed25519PrivateKey.generate()
    forged_signature = base64.b64encode(
        other.sign(f"{published['seq']}:{published['hash']}:{published['signed_at']}".encode())
    ).decode()
    cases: list[dict[str, Any]] = [
        {**published, "signature": forged_signature},
        {**published, "seq": 1},  # signed fields changed
        {key: value for key, value in published.items() if key != "signature"},
        {"seq": 1},
    ]
    for head in cases:
        params = {f"head_{name}": value for name, value in head.items() if name != "public_key"}
        response = await admin_api.client.get(
            VERIFY, params=params, headers=admin_api.admin_headers()
        )
        assert response.status_code == 422, (head, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "invalid_published_head"
    bad_hash = await admin_api.client.get(
        VERIFY, params={"head_hash": "not-hex"}, headers=admin_api.admin_headers()
    )
    assert bad_hash.status_code == 422


async def test_only_admins_read_the_head(admin_api: AdminApi) -> None:
    viewer = await admin_api.client.get(HEAD, headers=admin_api.admin_headers(Role.VIEWER))
    assert viewer.status_code == 403
    assert (await admin_api.client.get(HEAD)).status_code == 401


async def test_rekey_upgrades_an_unkeyed_chain_and_refuses_a_broken_one(
    admin_api: AdminApi, new_event: Any
) -> None:
    await admin_api.ingest([new_event() for _ in range(3)])
    # A chain written before the upgrade: the same rows, hashed with plain sha256.
    await rewrite_without(admin_api, 0, sha256_chain)
    before = await verify(admin_api)
    assert before["valid"] is False
    assert "rekey-audit-chain" in before["reason"]

    key = CHAIN_KEY.encode()
    async with session_scope(admin_api.sessionmaker) as session:
        assert await rekey_chain(session, key=key) == 3
    assert (await verify(admin_api))["valid"] is True
    async with session_scope(admin_api.sessionmaker) as session:
        assert await rekey_chain(session, key=key) == 0  # idempotent

    # A tampered unkeyed chain is not laundered: nothing changes.
    await rewrite_without(admin_api, 0, sha256_chain)
    async with session_scope(admin_api.sessionmaker) as session:
        await session.execute(update(AuditEventRow).where(AuditEventRow.seq == 2).values(actor="x"))
    async with admin_api.sessionmaker() as session:
        snapshot = [r.hash for r in await session.scalars(select(AuditEventRow).order_by("seq"))]
    with pytest.raises(ChainNotRekeyable, match="row 2 was modified"):
        async with session_scope(admin_api.sessionmaker) as session:
            await rekey_chain(session, key=key)
    async with admin_api.sessionmaker() as session:
        after = [r.hash for r in await session.scalars(select(AuditEventRow).order_by("seq"))]
        result = await verify_chain(session, key=key)
    assert after == snapshot
    assert result.valid is False


def test_the_signing_key_is_read_from_a_pem_or_a_seed_in_hex_or_base64() -> None:
    expected = Ed25519PrivateKey.from_private_bytes(SIGNING_SEED).public_key().public_bytes_raw()
    pem = (
        Ed25519PrivateKey.from_private_bytes(SIGNING_SEED)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    forms = [
        pem,
        SIGNING_SEED.hex(),
        base64.b64encode(SIGNING_SEED).decode(),
        base64.urlsafe_b64encode(SIGNING_SEED).decode().rstrip("="),
    ]
    for form in forms:
        settings = Settings(audit_chain_key=SecretStr(CHAIN_KEY), audit_signing_key=SecretStr(form))
        assert chain_keys(settings).public_key.public_bytes_raw() == expected, form


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "FLIGHTDECK_ADMIN_AUDIT_SIGNING_KEY"),
        ("c2hvcnQ=", "a seed must be 32 bytes"),
        ("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----", "not a usable"),
    ],
)
def test_production_refuses_a_missing_or_unusable_signing_key(
    value: str | None, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings(
            environment="production",
            service_client_secret=SecretStr("s" * 40),
            audit_chain_key=SecretStr(CHAIN_KEY),
            audit_signing_key=None if value is None else SecretStr(value),
        )


def test_production_requires_the_chain_key() -> None:
    with pytest.raises(ValueError, match="FLIGHTDECK_ADMIN_AUDIT_CHAIN_KEY"):
        Settings(
            environment="production",
            service_client_secret=SecretStr("s" * 40),
            audit_signing_key=SecretStr(SIGNING_SEED.hex()),
        )


def test_the_signed_head_log_line_holds_what_verify_accepts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = chain_keys(
        Settings(
            audit_chain_key=SecretStr(CHAIN_KEY), audit_signing_key=SecretStr(SIGNING_SEED.hex())
        )
    )
    signed = sign_head(keys, ChainHead(7, "ab" * 32))
    with caplog.at_level(logging.INFO, logger="flightdeck_admin.audit.head"):
        log_signed_head(signed)
    [record] = caplog.records
    fields = record.__dict__["audit_head"]
    assert fields == {
        "seq": 7,
        "hash": "ab" * 32,
        "signed_at": signed.signed_at,
        "signature": signed.signature,
    }
    assert f"signature={signed.signature}" in record.getMessage()
    message = f"7:{'ab' * 32}:{signed.signed_at}"
    assert keys.signature_is_valid(message, fields["signature"])
    assert not keys.signature_is_valid(message.replace("7:", "8:", 1), fields["signature"])


def test_unkeyed_and_keyed_hashes_differ() -> None:
    fields = {"seq": 1, "id": "x"}
    assert unkeyed_event_hash(GENESIS_HASH, fields) == sha256_chain(GENESIS_HASH, fields)
    assert event_hash(GENESIS_HASH, fields, b"k1") != event_hash(GENESIS_HASH, fields, b"k2")
