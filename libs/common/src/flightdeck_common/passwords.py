"""Usernames, the password policy and argon2id hashing, shared by auth and admin.

The policy follows NIST SP 800-63B (5.1.1.2): a length range counted in code points
after NFKC normalization, a list of well-known passwords, no username inside, no
single repeated character, and no composition rules. Hashing is argon2id, optionally
peppered, and runs in a small dedicated thread pool: at most
:data:`MAX_CONCURRENT_HASHES` hashes run at once in the process, so a login flood
queues up instead of starving the event loop or allocating ``memory_cost`` per
request.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, ClassVar, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from flightdeck_common.errors import FlightdeckError

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 80
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 256
# Longer inputs are refused by verify() before normalization: no policy-compliant
# password can be this long, and NFKC plus argon2 on megabytes would be a cheap DoS.
VERIFY_MAX_INPUT_CHARS = 4096
# Process-wide bound on concurrent argon2 computations (each takes memory_cost KiB).
MAX_CONCURRENT_HASHES = 2

_USERNAME_PATTERN = re.compile(r"[a-z0-9._-]+")
_T = TypeVar("_T")


class InvalidUsername(FlightdeckError):
    status_code = 422
    code = "invalid_username"
    title = "Invalid username"


class WeakPassword(FlightdeckError):
    """The password breaks a policy rule; ``rule`` names it, the password is never echoed."""

    status_code = 422
    code = "weak_password"
    title = "Password does not meet the policy"
    example_members = {"rule": "too_short"}

    def __init__(self, detail: str | None = None, *, rule: str = "policy", **extra: Any) -> None:
        super().__init__(detail, rule=rule, **extra)
        self.rule = rule


def normalize_username(raw: str) -> str:
    """Return the canonical form of a username (NFKC, stripped, casefolded).

    Raises :class:`InvalidUsername` unless the result is 3 to 80 characters from
    ``a-z``, ``0-9``, ``.``, ``_`` and ``-``.
    """
    username = unicodedata.normalize("NFKC", raw).strip().casefold()
    if (
        not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH
        or _USERNAME_PATTERN.fullmatch(username) is None
    ):
        raise InvalidUsername(
            f"A username must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters "
            "long and use only lowercase letters a-z, digits, '.', '_' and '-'."
        )
    return username


@functools.cache
def common_passwords() -> frozenset[str]:
    """The casefolded well-known passwords shipped in ``data/common_passwords.txt``."""
    text = (
        resources.files("flightdeck_common")
        .joinpath("data/common_passwords.txt")
        .read_text(encoding="utf-8")
    )
    return frozenset(
        line.strip().casefold()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )


def check_password_policy(password: str, *, username: str | None = None) -> None:
    """Raise :class:`WeakPassword` unless ``password`` satisfies the policy.

    Rules, in order: 12 to 256 code points after NFKC normalization; not one
    character repeated; not equal to or containing the username (casefolded);
    not a well-known password (casefolded). The error's ``rule`` (also a
    problem+json member) is ``invalid_characters`` (NUL, lone surrogates), ``too_short``, ``too_long``, ``repeated_character``,
    ``contains_username`` or ``common_password``.
    """
    normalized = unicodedata.normalize("NFKC", password)
    if "\x00" in normalized or any("\ud800" <= char <= "\udfff" for char in normalized):
        # JSON can carry "\u0000" and lone surrogates ("\ud800"); neither is text anyone types.
        raise WeakPassword(
            "The password must be text without NUL characters or lone surrogates.",
            rule="invalid_characters",
        )
    length = len(normalized)
    if length < PASSWORD_MIN_LENGTH:
        raise WeakPassword(
            f"The password must be at least {PASSWORD_MIN_LENGTH} characters long.",
            rule="too_short",
        )
    if length > PASSWORD_MAX_LENGTH:
        raise WeakPassword(
            f"The password must be at most {PASSWORD_MAX_LENGTH} characters long.",
            rule="too_long",
        )
    if len(set(normalized)) == 1:
        raise WeakPassword(
            "The password must not be a single repeated character.", rule="repeated_character"
        )
    folded = normalized.casefold()
    if username is not None:
        folded_username = unicodedata.normalize("NFKC", username).strip().casefold()
        # Shorter strings cannot be usernames and would reject half the alphabet.
        if len(folded_username) >= USERNAME_MIN_LENGTH and folded_username in folded:
            raise WeakPassword(
                "The password must not contain the username.", rule="contains_username"
            )
    if folded in common_passwords():
        raise WeakPassword(
            "The password is on a list of commonly used passwords; choose another one.",
            rule="common_password",
        )


_hash_executor: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _hash_executor
    if _hash_executor is None:
        # Threads start on first use, not here; idle workers cost nothing.
        _hash_executor = ThreadPoolExecutor(
            max_workers=MAX_CONCURRENT_HASHES, thread_name_prefix="flightdeck-argon2"
        )
    return _hash_executor


async def _off_loop(function: Callable[..., _T], *args: object) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_executor(), function, *args)


class PasswordHasher:
    """argon2id password hashing that never runs on the event loop.

    With a ``pepper`` (a server-side secret kept out of the database), the argon2
    input is ``HMAC-SHA256(pepper, NFKC(password))``; without one it is the NFKC
    form of the password. Changing or removing the pepper invalidates every hash.

    All hashes and verifications of the process share one pool of
    :data:`MAX_CONCURRENT_HASHES` threads: under a login flood requests wait in
    its queue, so CPU and argon2 memory (``memory_cost`` KiB each) stay bounded and
    the event loop keeps serving. Create one hasher per app (in ``lifespan``) and
    call :meth:`warm_up` there so the first :meth:`dummy_verify` is not slower.
    """

    # OWASP's recommended argon2id configuration (Password Storage Cheat Sheet): 19 MiB,
    # 2 passes, 1 lane. About 30 ms per hash on one core of a small machine, so a 2-core
    # instance takes ~30 logins/s; RFC 9106's 64 MiB / 3 passes costs 7 times that.
    DEFAULT_TIME_COST: ClassVar[int] = 2
    DEFAULT_MEMORY_COST: ClassVar[int] = 19456
    DEFAULT_PARALLELISM: ClassVar[int] = 1

    def __init__(
        self,
        pepper: str | None = None,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST,
        parallelism: int = DEFAULT_PARALLELISM,
    ) -> None:
        if pepper is not None and not pepper:
            raise ValueError("pepper must be a non-empty string or None")
        self._pepper = pepper.encode("utf-8") if pepper else None
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._dummy_hash: str | None = None

    def _secret_input(self, password: str) -> bytes:
        # surrogatepass: a lone surrogate sent to a login never raises (it just never matches).
        data = unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")
        if self._pepper is None:
            return data
        return hmac.new(self._pepper, data, hashlib.sha256).digest()

    def _hash_sync(self, password: str) -> str:
        return self._argon2.hash(self._secret_input(password))

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, self._secret_input(password))
        except (VerificationError, InvalidHashError, ValueError, TypeError):
            # Mismatch, corrupt or non-argon2 hash: all mean "not this password".
            return False

    async def hash(self, password: str) -> str:
        """Hash ``password`` with argon2id (PHC string with salt and parameters)."""
        return await _off_loop(self._hash_sync, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; False (never an error) otherwise.

        Malformed hashes and absurdly long inputs (over 4096 characters) are
        simply not a match.
        """
        if not isinstance(password_hash, str) or not isinstance(password, str):
            return False
        if len(password) > VERIFY_MAX_INPUT_CHARS:
            return False
        return await _off_loop(self._verify_sync, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters (rehash after a successful login).

        An unparseable hash also "needs rehash".
        """
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError, TypeError):
            return True

    async def warm_up(self) -> None:
        """Compute the hash :meth:`dummy_verify` checks against (idempotent)."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))

    async def dummy_verify(self) -> None:
        """Spend the time of a real :meth:`verify` (for unknown users: no timing oracle).

        The reference hash is computed once, lazily; call :meth:`warm_up` at startup
        to keep that cost off the first request.
        """
        await self.warm_up()
        assert self._dummy_hash is not None
        await self.verify(self._dummy_hash, secrets.token_urlsafe(24))
