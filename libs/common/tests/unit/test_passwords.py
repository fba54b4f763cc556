"""Usernames, the NIST password policy and argon2id hashing off the event loop."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from typing import Any

import pytest

from flightdeck_common import passwords
from flightdeck_common.passwords import (
    MAX_CONCURRENT_HASHES,
    InvalidUsername,
    PasswordHasher,
    WeakPassword,
    check_password_policy,
    common_passwords,
    normalize_username,
)

# Cheap parameters: these tests are about behaviour, not cost.
FAST = {"time_cost": 1, "memory_cost": 8192, "parallelism": 1}
GOOD_PASSWORD = "vapor-Tangle-91-orbit"


def fast_hasher(pepper: str | None = None) -> PasswordHasher:
    return PasswordHasher(pepper, **FAST)


# --- usernames -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice"),
        ("  Alice.Smith \n", "alice.smith"),
        ("\uff21\uff24\uff2d\uff29\uff2e", "admin"),  # fullwidth ADMIN (NFKC)
        ("Bob_O-Neil", "bob_o-neil"),
        ("abc", "abc"),
        ("a" * 80, "a" * 80),
    ],
)
def test_normalize_username_canonical_form(raw: str, expected: str) -> None:
    assert normalize_username(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["ab", "a" * 81, "", "   ", "al ice", "alice@example.com", "ålice", "ali\nce", "名前です"],
)
def test_normalize_username_rejects(raw: str) -> None:
    with pytest.raises(InvalidUsername) as caught:
        normalize_username(raw)
    error = caught.value
    assert error.status_code == 422
    assert error.code == "invalid_username"
    assert "3 to 80" in str(error.detail)
    assert "a-z" in str(error.detail)


# --- password policy -------------------------------------------------------------------


def rule_of(password: str, username: str | None = None) -> str:
    with pytest.raises(WeakPassword) as caught:
        check_password_policy(password, username=username)
    return caught.value.rule


def test_policy_length_boundaries() -> None:
    assert rule_of("Tr0ub4dor&3") == "too_short"  # 11
    check_password_policy("Tr0ub4dor&3x")  # 12
    long_ok = ("Tr0ub4dor&3x" * 22)[:256]
    check_password_policy(long_ok)  # 256
    assert rule_of(long_ok + "z") == "too_long"  # 257


def test_policy_counts_code_points_after_nfkc() -> None:
    # "e" + combining acute composes to one code point: 13 typed, 12 counted.
    check_password_policy("Tr0ub4dor&3" + "e\u0301")
    # 12 typed, 11 counted after composition.
    assert rule_of("Tr0ub4dor&" + "e\u0301") == "too_short"
    # Non-Latin scripts and emoji count one per code point.
    check_password_policy("пароль-мой-кот")
    check_password_policy("🔥🚀🔥🚀🔥🚀🔥🚀🔥🚀🔥🚀")
    assert rule_of("🔥🚀🔥🚀🔥🚀🔥🚀🔥🚀🔥") == "too_short"
    # NFKC expands ligatures: "ﬃ" is three characters.
    check_password_policy("ﬃﬃﬃ-ǅ-ok")


def test_policy_rejects_a_single_repeated_character() -> None:
    assert rule_of("z" * 14) == "repeated_character"
    assert rule_of("é" * 12) == "repeated_character"
    check_password_policy("zz" * 6 + "y")


@pytest.mark.parametrize(
    "password",
    [
        "password1234",
        "Password1234",
        "QWERTYUIOP123",
        "1qaz2wsx3edc",
        "Summer2024!!",
        "iloveyou1234",
    ],
)
def test_policy_rejects_common_passwords_case_insensitively(password: str) -> None:
    assert rule_of(password) == "common_password"


def test_policy_rejects_username_inside_or_equal() -> None:
    assert rule_of("xxalice-rocks", username="alice") == "contains_username"
    assert rule_of("xxALICE-rocks", username="Alice") == "contains_username"
    assert rule_of("rosalind.franklin", username="rosalind.franklin") == "contains_username"
    # Without a username, or with another one, the same password is fine.
    check_password_policy("xxalice-rocks")
    check_password_policy("xxalice-rocks", username="bob")
    # Strings too short to be usernames are not searched for.
    check_password_policy("xxalice-rocks", username="al")


def test_weak_password_problem_never_echoes_the_password() -> None:
    secret = "Password1234"
    with pytest.raises(WeakPassword) as caught:
        check_password_policy(secret)
    error = caught.value
    assert error.status_code == 422
    assert error.code == "weak_password"
    response = error.to_response()
    body = bytes(response.body).decode()
    assert secret.lower() not in body.lower()
    assert '"rule":"common_password"' in body
    assert response.media_type == "application/problem+json"


def test_common_password_list_is_shipped_and_casefolded() -> None:
    entries = common_passwords()
    assert len(entries) >= 1000
    assert all(entry == entry.casefold() and entry.strip() == entry for entry in entries)
    assert {"password", "123456", "qwerty123456", "correcthorsebatterystaple"} <= entries
    assert sum(len(entry) >= 12 for entry in entries) >= 150


@pytest.mark.parametrize(
    "password", ["a-long-pass\x00phrase", "a-long-pass\ud800phrase", "\udfff" + "x" * 20]
)
def test_policy_rejects_nul_and_lone_surrogates(password: str) -> None:
    assert rule_of(password) == "invalid_characters"


# --- hashing --------------------------------------------------------------------------


async def test_a_lone_surrogate_never_raises_it_just_does_not_match() -> None:
    hasher = fast_hasher()
    stored = await hasher.hash(GOOD_PASSWORD)
    assert not await hasher.verify(stored, GOOD_PASSWORD + "\ud800")
    # Hashing it works too (the policy refuses such passwords before they get here).
    assert (await hasher.hash("lone \udc00 surrogate")).startswith("$argon2id$")


async def test_hash_verify_round_trip() -> None:
    hasher = fast_hasher()
    first = await hasher.hash(GOOD_PASSWORD)
    second = await hasher.hash(GOOD_PASSWORD)
    assert first.startswith("$argon2id$")
    assert first != second  # random salt
    assert await hasher.verify(first, GOOD_PASSWORD)
    assert await hasher.verify(second, GOOD_PASSWORD)
    assert not await hasher.verify(first, GOOD_PASSWORD + "x")
    assert not await hasher.verify(first, "")


async def test_verify_normalizes_unicode() -> None:
    hasher = fast_hasher()
    stored = await hasher.hash("café-au-lait-noir")  # precomposed é
    assert await hasher.verify(stored, "cafe\u0301-au-lait-noir")  # e + combining accent


async def test_pepper_is_required_to_verify() -> None:
    peppered = fast_hasher("pepper-one-0123456789abcdef")
    stored = await peppered.hash(GOOD_PASSWORD)
    assert await peppered.verify(stored, GOOD_PASSWORD)
    assert not await fast_hasher().verify(stored, GOOD_PASSWORD)
    assert not await fast_hasher("pepper-two-0123456789abcdef").verify(stored, GOOD_PASSWORD)
    # And the other way round: an unpeppered hash does not verify with a pepper.
    plain = await fast_hasher().hash(GOOD_PASSWORD)
    assert not await peppered.verify(plain, GOOD_PASSWORD)


def test_empty_pepper_is_refused() -> None:
    with pytest.raises(ValueError, match="pepper"):
        PasswordHasher("")


async def test_needs_rehash_after_parameter_change() -> None:
    old = fast_hasher()
    stored = await old.hash(GOOD_PASSWORD)
    assert not old.needs_rehash(stored)
    assert PasswordHasher(time_cost=2, memory_cost=8192, parallelism=1).needs_rehash(stored)
    assert PasswordHasher(time_cost=1, memory_cost=16384, parallelism=1).needs_rehash(stored)
    assert PasswordHasher().needs_rehash(stored)
    assert old.needs_rehash("not a hash")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not-a-hash",
        "$argon2id$v=19$m=8192,t=1,p=1$c2FsdA$",
        "$argon2id$v=19$m=8192,t=1,p=1$!!!$!!!",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "pbkdf2_sha256$600000$salt$hash",
        "\x00\xff",
    ],
)
async def test_verify_garbage_hash_is_false(garbage: str) -> None:
    assert await fast_hasher().verify(garbage, GOOD_PASSWORD) is False


async def test_verify_truncated_hash_and_odd_inputs_are_false() -> None:
    hasher = fast_hasher()
    stored = await hasher.hash(GOOD_PASSWORD)
    assert await hasher.verify(stored[:-5], GOOD_PASSWORD) is False
    assert await hasher.verify(stored, "x" * 100_000) is False
    bad_type: Any = None
    assert await hasher.verify(bad_type, GOOD_PASSWORD) is False
    assert await hasher.verify(stored, bad_type) is False


async def test_hashing_does_not_block_the_event_loop() -> None:
    hasher = PasswordHasher()  # production parameters: ~30 ms per hash here, 2 at a time
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    hashes = await asyncio.gather(hasher.hash("first-password-x"), hasher.hash("second-password"))
    elapsed = time.perf_counter() - started
    done.set()
    await task

    assert all(h.startswith("$argon2id$") for h in hashes)
    assert elapsed > 0.02, "hashing was suspiciously fast; the test proves nothing"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # A hash on the loop would freeze the ticker for its whole duration: about 2 ticks in
    # all. Off the loop it ticks every 5 ms of the ~40-60 ms (9 once on a CI run, so not 10).
    assert len(ticks) >= 5
    assert max(gaps) < elapsed / 2


async def test_at_most_two_hashes_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = fast_hasher()
    lock = threading.Lock()
    running = 0
    peak = 0

    def slow_hash(password: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return password

    monkeypatch.setattr(hasher, "_hash_sync", slow_hash)
    results = await asyncio.gather(*(hasher.hash(f"pw-{i}") for i in range(6)))
    assert results == [f"pw-{i}" for i in range(6)]
    assert MAX_CONCURRENT_HASHES == 2
    assert peak == 2
    assert passwords._executor()._max_workers == 2


async def test_dummy_verify_takes_as_long_as_a_real_verify() -> None:
    hasher = PasswordHasher()
    stored = await hasher.hash(GOOD_PASSWORD)
    await hasher.warm_up()

    async def cpu_seconds(coroutine: Any) -> float:
        # CPU time of the process (the hash runs in a pool thread): what an attacker's
        # timing measures, without the noise of other processes on a busy machine.
        started = time.process_time()
        await coroutine
        return time.process_time() - started

    real: list[float] = []
    dummy: list[float] = []
    for _ in range(5):  # interleaved, so both see the same conditions
        real.append(await cpu_seconds(hasher.verify(stored, "wrong-password-1")))
        dummy.append(await cpu_seconds(hasher.dummy_verify()))
    ratio = statistics.median(dummy) / statistics.median(real)
    assert 0.6 < ratio < 1.6, (real, dummy)


async def test_dummy_verify_works_without_warm_up() -> None:
    hasher = fast_hasher("some-pepper")
    await hasher.dummy_verify()  # computes the reference hash, then verifies
    await hasher.dummy_verify()
    assert hasher._dummy_hash is not None
    assert await hasher.verify(hasher._dummy_hash, "anything") is False
