"""Signed review of registration requests: approval creates the account at auth exactly
once; every refused decision changes nothing, here or at auth."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from flightdeck_common.approval_signatures import verify_approval_signature

Onboarding = Any
PASSWORD = "a-long-and-unusual-passphrase"


def creating_users(request: Any) -> bool:
    return bool(request.method == "POST" and request.url.path == "/auth/internal/users")


@pytest.fixture(params=["rsa", "ed25519"])
async def reviewer_key(
    request: pytest.FixtureRequest, onboarding: Onboarding, rsa_key: rsa.RSAPrivateKey
) -> Any:
    """The bootstrap admin's approval key, registered at auth (RSA 2048 or Ed25519)."""
    key = rsa_key if request.param == "rsa" else ed25519.Ed25519PrivateKey.generate()
    await onboarding.register_key(key)
    return key


@pytest.fixture
async def key(onboarding: Onboarding, rsa_key: rsa.RSAPrivateKey) -> rsa.RSAPrivateKey:
    await onboarding.register_key(rsa_key)
    return rsa_key


def unchanged_check(onboarding: Onboarding, request_id: int) -> Callable[[], Any]:
    """A snapshot of the request row, auth's users and admin's outbox, to compare later."""

    async def snapshot() -> tuple[dict[str, Any], dict[str, Any], int]:
        return (
            await onboarding.request_row(request_id),
            await onboarding.auth_users(),
            len(await onboarding.outbox()),
        )

    return snapshot


async def test_approval_creates_the_account(onboarding: Onboarding, reviewer_key: Any) -> None:
    request_id = await onboarding.filed("nina", PASSWORD)
    signed_at = datetime.now(UTC).isoformat()
    signature = onboarding.sign(reviewer_key, f"{request_id}:approve:operator:nina:{signed_at}")
    response = await onboarding.admin.post(
        f"/admin/registration-requests/{request_id}/approve",
        json={
            "signed_at": signed_at,
            "signature": signature,
            "note": "welcome",
            "role": "operator",
        },
        headers=await onboarding.headers(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    signature_sha256 = hashlib.sha256(base64.b64decode(signature)).hexdigest()
    assert body["status"] == "approved"
    assert body["role"] == "operator"
    assert body["decided_by"] == "admin"
    assert body["decision_note"] == "welcome"
    assert body["signed_at"] == signed_at
    assert body["signature_sha256"] == signature_sha256
    assert len(body["key_fingerprint"]) == 64
    assert "password_hash" not in body
    # The signature and the key it verified with are kept: the decision can be checked later.
    assert body["signature"] == signature
    assert verify_approval_signature(
        body["public_key_pem"],
        f"{request_id}:approve:operator:nina:{signed_at}".encode(),
        base64.b64decode(body["signature"]),
    )

    nina = (await onboarding.auth_users())["nina"]
    assert body["user_id"] == nina["id"]
    assert nina["role"] == "operator"
    # The newcomer signs in with the password of the registration.
    await onboarding.login("nina", PASSWORD)

    [event] = await onboarding.outbox("admin.registration.approved")
    assert event["actor"] == "admin"
    assert event["subject"] == str(request_id)
    assert event["data"]["signature_sha256"] == signature_sha256
    assert event["data"]["key_fingerprint"] == body["key_fingerprint"]
    assert event["data"]["reviewer"] == "admin"
    assert event["data"]["role"] == "operator"
    assert event["data"]["user_id"] == nina["id"]

    row = await onboarding.request_row(request_id)
    assert row["status"] == "approved"
    assert row["claimed_at"] is None
    assert row["decided_by_id"] == str((await onboarding.auth_users())["admin"]["id"])
    # The account exists: the applicant's password hash is gone from admin's storage.
    assert row["password_hash"] is None


async def test_approval_defaults_to_viewer_and_accepts_z_times(
    onboarding: Onboarding, key: Any
) -> None:
    request_id = await onboarding.filed("omar", PASSWORD)
    signed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = await onboarding.decide(request_id, "approve", key, signed_at=signed_at)
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "viewer"
    assert (await onboarding.auth_users())["omar"]["role"] == "viewer"


async def test_rejection(onboarding: Onboarding, reviewer_key: Any) -> None:
    request_id = await onboarding.filed("pia", PASSWORD)
    response = await onboarding.decide(request_id, "reject", reviewer_key, note="unknown person")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "rejected"
    assert body["decision_note"] == "unknown person"
    assert body["user_id"] is None
    assert body["role"] is None
    assert "pia" not in await onboarding.auth_users()
    assert body["signature"] is not None
    assert body["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert (await onboarding.request_row(request_id))["password_hash"] is None
    [event] = await onboarding.outbox("admin.registration.rejected")
    assert event["data"]["signature_sha256"] == body["signature_sha256"]
    assert event["actor"] == "admin"


async def test_replayed_signature_is_409(onboarding: Onboarding, key: Any) -> None:
    first = await onboarding.filed("quinn")
    other = await onboarding.filed("rosa")
    signed_at = datetime.now(UTC).isoformat()
    body = {
        "signed_at": signed_at,
        "signature": onboarding.sign(key, f"{first}:reject::quinn:{signed_at}"),
    }
    headers = await onboarding.headers()
    path = "/admin/registration-requests/{}/reject"
    assert (
        await onboarding.admin.post(path.format(first), json=body, headers=headers)
    ).status_code == 200

    snapshots = [unchanged_check(onboarding, rid) for rid in (first, other)]
    before = [await s() for s in snapshots]
    for target, action in ((first, "reject"), (other, "reject"), (other, "approve")):
        replay = await onboarding.admin.post(
            f"/admin/registration-requests/{target}/{action}", json=body, headers=headers
        )
        assert replay.status_code == 409, replay.text
        assert replay.json()["code"] == "signature_replayed"
        assert replay.headers["content-type"] == "application/problem+json"
    assert [await s() for s in snapshots] == before


@pytest.mark.parametrize(
    ("offset", "words"),
    [(timedelta(seconds=-400), "in the past"), (timedelta(seconds=400), "in the future")],
)
async def test_stale_signed_at_is_400(
    onboarding: Onboarding, key: Any, offset: timedelta, words: str
) -> None:
    request_id = await onboarding.filed("sam")
    snapshot = unchanged_check(onboarding, request_id)
    before = await snapshot()
    signed_at = (datetime.now(UTC) + offset).isoformat()
    response = await onboarding.decide(request_id, "approve", key, signed_at=signed_at)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["code"] == "signature_expired"
    assert words in problem["detail"]
    assert "300 s" in problem["detail"]
    assert abs(abs(problem["skew_seconds"]) - 400) <= 5
    assert await snapshot() == before


@pytest.mark.parametrize(
    "signed_at",
    [
        "2026-11-25T10:15:00",  # no offset
        "yesterday",
        "",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "2026-11-25T10:15:00\x00+00:00",
    ],
)
async def test_unusable_signed_at_is_400(onboarding: Onboarding, key: Any, signed_at: str) -> None:
    request_id = await onboarding.filed("tom")
    snapshot = unchanged_check(onboarding, request_id)
    before = await snapshot()
    response = await onboarding.admin.post(
        f"/admin/registration-requests/{request_id}/approve",
        json={"signed_at": signed_at, "signature": onboarding.sign(key, "x")},
        headers=await onboarding.headers(),
    )
    assert response.status_code in (400, 422), response.text
    if signed_at:
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_signed_at"
    assert await snapshot() == before


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # refused before storage
@pytest.mark.parametrize("signature", ["not base64!", "YWJ", "YW Jj", "é", "====", "YWJj\n"])
async def test_invalid_base64_is_400(onboarding: Onboarding, key: Any, signature: str) -> None:
    request_id = await onboarding.filed("uma")
    snapshot = unchanged_check(onboarding, request_id)
    before = await snapshot()
    response = await onboarding.admin.post(
        f"/admin/registration-requests/{request_id}/approve",
        json={"signed_at": datetime.now(UTC).isoformat(), "signature": signature},
        headers=await onboarding.headers(),
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_signature_encoding"
    assert await snapshot() == before


async def test_signature_by_another_key_is_403(onboarding: Onboarding, key: Any) -> None:
    request_id = await onboarding.filed("vic")
    snapshot = unchanged_check(onboarding, request_id)
    before = await snapshot()
    for stranger in (ed25519.Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)):
        response = await onboarding.decide(request_id, "approve", stranger)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "invalid_signature"
    # Signed by the right key, but over another action, request, role or username, or in
    # the old format without role and username: also refused.
    signed_at = datetime.now(UTC).isoformat()
    for message in (
        f"{request_id}:reject::vic:{signed_at}",
        f"{request_id + 1}:approve:viewer:vic:{signed_at}",
        f"{request_id}:approve:admin:vic:{signed_at}",
        f"{request_id}:approve:viewer:victor:{signed_at}",
        f"{request_id}:approve:{signed_at}",
    ):
        response = await onboarding.admin.post(
            f"/admin/registration-requests/{request_id}/approve",
            json={"signed_at": signed_at, "signature": onboarding.sign(key, message)},
            headers=await onboarding.headers(),
        )
        assert response.status_code == 403
    assert await snapshot() == before


async def test_reviewer_without_a_key_is_403(onboarding: Onboarding) -> None:
    request_id = await onboarding.filed("wes")
    await onboarding.create_auth_user("second-admin", PASSWORD, role="admin")
    headers = await onboarding.headers("second-admin", PASSWORD)
    snapshot = unchanged_check(onboarding, request_id)
    before = await snapshot()
    unregistered = ed25519.Ed25519PrivateKey.generate()
    response = await onboarding.decide(request_id, "approve", unregistered, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "approval_key_required"
    assert "/auth/me/approval-key" in response.json()["detail"]
    assert await snapshot() == before


async def test_deciding_a_decided_request_is_409(onboarding: Onboarding, key: Any) -> None:
    approved = await onboarding.filed("xena", PASSWORD)
    rejected = await onboarding.filed("yuri", PASSWORD)
    assert (await onboarding.decide(approved, "approve", key)).status_code == 200
    assert (await onboarding.decide(rejected, "reject", key)).status_code == 200
    snapshots = [unchanged_check(onboarding, rid) for rid in (approved, rejected)]
    before = [await s() for s in snapshots]
    for request_id in (approved, rejected):
        for action in ("approve", "reject"):
            response = await onboarding.decide(request_id, action, key)
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "request_already_decided"
            assert "already been" in response.json()["detail"]
    assert [await s() for s in snapshots] == before


async def test_review_needs_an_admin_and_an_existing_request(
    onboarding: Onboarding, key: Any
) -> None:
    request_id = await onboarding.filed("zoe")
    await onboarding.create_auth_user("oscar", PASSWORD, role="operator")
    operator = await onboarding.headers("oscar", PASSWORD)
    response = await onboarding.decide(request_id, "approve", key, headers=operator)
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_role"
    anonymous = await onboarding.admin.post(
        f"/admin/registration-requests/{request_id}/approve",
        json={"signed_at": datetime.now(UTC).isoformat(), "signature": "AAAA"},
    )
    assert anonymous.status_code == 401
    missing = await onboarding.decide(424242, "approve", key)
    assert missing.status_code == 404
    assert missing.json()["code"] == "registration_request_not_found"
    for body in (
        {},
        {"signed_at": "x"},
        {"signature": "AAAA"},
        {"signed_at": "x", "signature": "A" * 5000},
    ):
        malformed = await onboarding.admin.post(
            f"/admin/registration-requests/{request_id}/reject",
            json=body,
            headers=await onboarding.headers(),
        )
        assert malformed.status_code == 422
    bad_role = await onboarding.decide(request_id, "approve", key, role="superuser")
    assert bad_role.status_code == 422
    assert (await onboarding.request_row(request_id))["status"] == "pending"


async def test_auth_down_during_approval_keeps_the_request_pending(
    onboarding: Onboarding, key: Any
) -> None:
    request_id = await onboarding.filed("amir", PASSWORD)
    users_before = await onboarding.auth_users()
    onboarding.transport.unreachable = creating_users
    response = await onboarding.decide(request_id, "approve", key)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "auth_unavailable"
    assert response.headers["retry-after"]
    row = await onboarding.request_row(request_id)
    assert (row["status"], row["claimed_at"], row["signature_sha256"]) == ("pending", None, None)
    assert await onboarding.auth_users() == users_before
    assert await onboarding.outbox("admin.registration.approved") == []

    onboarding.transport.unreachable = None
    again = await onboarding.decide(request_id, "approve", key)
    assert again.status_code == 200, again.text
    users = await onboarding.auth_users()
    assert [name for name in users if name == "amir"] == ["amir"]
    assert len(users) == len(users_before) + 1
    await onboarding.login("amir", PASSWORD)


async def test_auth_completely_down_is_503_before_anything_changes(
    onboarding: Onboarding, key: Any
) -> None:
    request_id = await onboarding.filed("bea", PASSWORD)
    await onboarding.headers()  # signed in while auth was up
    snapshot = unchanged_check(onboarding, request_id)
    before = await snapshot()
    onboarding.transport.unreachable = lambda request: True
    for action in ("approve", "reject"):
        response = await onboarding.decide(request_id, action, key)
        assert response.status_code == 503, response.text
    onboarding.transport.unreachable = None
    assert await snapshot() == before


async def test_lost_answer_then_retry_gives_one_account(onboarding: Onboarding, key: Any) -> None:
    """Auth created the account but its answer never came back: a rejection is refused
    (it would leave the account behind), a retried approval gets the same account."""
    request_id = await onboarding.filed("cruz", PASSWORD)
    onboarding.transport.answer_lost = creating_users
    lost = await onboarding.decide(request_id, "approve", key, role="operator")
    assert lost.status_code == 503
    assert (await onboarding.request_row(request_id))["status"] == "pending"
    created = (await onboarding.auth_users())["cruz"]  # it does exist at auth

    # A retry that does not reach auth keeps the doubt.
    onboarding.transport.answer_lost = None
    onboarding.transport.unreachable = creating_users
    assert (await onboarding.decide(request_id, "approve", key)).status_code == 503
    onboarding.transport.unreachable = None
    refused = await onboarding.decide(request_id, "reject", key)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "approval_may_have_succeeded"
    assert (await onboarding.request_row(request_id))["status"] == "pending"

    retried = await onboarding.decide(request_id, "approve", key)  # asks for viewer
    assert retried.status_code == 200, retried.text
    assert retried.json()["user_id"] == created["id"]
    assert retried.json()["role"] == "operator"  # what the account really got
    assert [u for u in await onboarding.auth_users() if u == "cruz"] == ["cruz"]
    [event] = await onboarding.outbox("admin.registration.approved")
    assert event["data"]["role"] == "operator"


async def test_rejection_after_an_interrupted_approval_that_made_nothing(
    onboarding: Onboarding, key: Any
) -> None:
    request_id = await onboarding.filed("dina", PASSWORD)
    onboarding.transport.bad_gateway = creating_users
    failed = await onboarding.decide(request_id, "approve", key)
    assert failed.status_code == 503
    onboarding.transport.bad_gateway = None
    # Admin cannot know whether the account exists: it asks auth, which has none.
    rejected = await onboarding.decide(request_id, "reject", key)
    assert rejected.status_code == 200, rejected.text
    assert "dina" not in await onboarding.auth_users()


async def test_rejection_after_auth_was_unreachable(onboarding: Onboarding, key: Any) -> None:
    request_id = await onboarding.filed("dora", PASSWORD)
    onboarding.transport.unreachable = creating_users
    assert (await onboarding.decide(request_id, "approve", key)).status_code == 503
    onboarding.transport.unreachable = None
    assert (await onboarding.request_row(request_id))["claimed_at"] is None  # surely nothing
    assert (await onboarding.decide(request_id, "reject", key)).status_code == 200


async def test_a_demoted_reviewer_cannot_decide(onboarding: Onboarding) -> None:
    request_id = await onboarding.filed("ezra", PASSWORD)
    reviewer = await onboarding.create_auth_user("reviewer", PASSWORD, role="admin")
    reviewer_key = ed25519.Ed25519PrivateKey.generate()
    await onboarding.register_key(reviewer_key, "reviewer", PASSWORD)
    headers = await onboarding.headers("reviewer", PASSWORD)
    demoted = await onboarding.auth.patch(
        f"/auth/internal/users/{reviewer['id']}",
        json={"role": "operator"},
        headers=await onboarding.service_headers(),
    )
    assert demoted.status_code == 200
    snapshot = unchanged_check(onboarding, request_id)
    before = await snapshot()
    # Its token still says admin: refused as revoked, or by auth's current answer.
    response = await onboarding.decide(request_id, "approve", reviewer_key, headers=headers)
    assert response.status_code in (401, 403), response.text
    assert response.json()["code"] in ("token_revoked", "insufficient_role")
    assert await snapshot() == before


async def test_abandoned_claim_is_taken_over_and_finished(onboarding: Onboarding, key: Any) -> None:
    """The process died after auth made the account: a later approval records that one."""
    request_id = await onboarding.filed("dani", PASSWORD)
    made = await onboarding.create_auth_user(
        "dani", "ignored-passphrase-here", idempotency_key=f"registration-{request_id}"
    )
    await onboarding.set_request(
        request_id, status="approving", claimed_at=datetime.now(UTC) - timedelta(seconds=30)
    )
    busy = await onboarding.decide(request_id, "approve", key)
    assert busy.status_code == 409  # a live claim: someone is approving right now
    assert "being approved" in busy.json()["detail"]
    rejected = await onboarding.decide(request_id, "reject", key)
    assert rejected.status_code == 409

    await onboarding.set_request(request_id, claimed_at=datetime.now(UTC) - timedelta(hours=1))
    assert (await onboarding.decide(request_id, "reject", key)).status_code == 409
    taken_over = await onboarding.decide(request_id, "approve", key)
    assert taken_over.status_code == 200, taken_over.text
    assert taken_over.json()["user_id"] == made["id"]
    assert [u for u in await onboarding.auth_users() if u == "dani"] == ["dani"]


async def test_username_taken_at_auth_meanwhile_is_409_and_stays_pending(
    onboarding: Onboarding, key: Any
) -> None:
    request_id = await onboarding.filed("eve", PASSWORD)
    await onboarding.create_auth_user("eve", "someone-elses-passphrase")
    response = await onboarding.decide(request_id, "approve", key)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "username_taken"
    row = await onboarding.request_row(request_id)
    assert (row["status"], row["signature_sha256"]) == ("pending", None)
    rejected = await onboarding.decide(request_id, "reject", key)
    assert rejected.status_code == 200


async def test_racing_approvals_make_one_account(onboarding: Onboarding, key: Any) -> None:
    request_id = await onboarding.filed("finn", PASSWORD)
    headers = await onboarding.headers()
    now = datetime.now(UTC)
    stamps = [(now + timedelta(milliseconds=i)).isoformat() for i in range(4)]
    answers = await asyncio.gather(
        *(
            onboarding.decide(request_id, "approve", key, signed_at=s, headers=headers)
            for s in stamps
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409, 409, 409], [a.text for a in answers]
    assert [u for u in await onboarding.auth_users() if u == "finn"] == ["finn"]
    assert len(await onboarding.outbox("admin.registration.approved")) == 1


async def test_approving_an_admin_hands_auth_the_signed_approval(
    onboarding: Onboarding, reviewer_key: Any
) -> None:
    request_id = await onboarding.filed("ada", PASSWORD)
    # Signed for a viewer, asked for an admin: the role is covered by the signature.
    signed_at = datetime.now(UTC).isoformat()
    escalated = await onboarding.admin.post(
        f"/admin/registration-requests/{request_id}/approve",
        json={
            "signed_at": signed_at,
            "signature": onboarding.sign(
                reviewer_key, f"{request_id}:approve:viewer:ada:{signed_at}"
            ),
            "role": "admin",
        },
        headers=await onboarding.headers(),
    )
    assert escalated.status_code == 403, escalated.text
    assert "ada" not in await onboarding.auth_users()

    approved = await onboarding.decide(request_id, "approve", reviewer_key, role="admin")
    assert approved.status_code == 200, approved.text
    assert approved.json()["role"] == "admin"
    # Auth verified the approval itself and made the admin, who signs in.
    assert (await onboarding.auth_users())["ada"]["role"] == "admin"
    await onboarding.login("ada", PASSWORD)
    assert (await onboarding.request_row(request_id))["password_hash"] is None
