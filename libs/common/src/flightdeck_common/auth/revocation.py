"""Revoked access tokens: one token (``jti``) or every token a subject got until a moment.

Two ways of knowing, behind one ``RevocationChecker`` protocol:

- ``RedisRevocations`` when Redis is configured: auth writes, every service reads, a
  revocation takes effect everywhere at once.
- ``MemoryRevocations`` without Redis: auth itself keeps its own; the other services keep
  a copy that a ``RevocationFeedFollower`` updates from auth's internal feed every few
  seconds (so a revocation takes up to one interval to reach them).

Entries are kept ``GRACE_SECONDS`` longer than the tokens they revoke could live, so the
verifier's leeway and clock skew cannot resurrect a revoked token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import httpx
from pydantic import BaseModel, ValidationError, field_validator
from redis.asyncio import Redis
from redis.exceptions import RedisError

from flightdeck_common.auth.claims import TokenClaims
from flightdeck_common.auth.errors import AuthUnavailable
from flightdeck_common.auth.service_tokens import ServiceCredentialsRejected, TokenProvider

REVOCATION_FEED_PATH = "/auth/internal/revocations"
FULL_RESYNC_SECONDS = 60.0
REDIS_JTI_PREFIX = "flightdeck:revoked:jti:"
REDIS_SUBJECT_PREFIX = "flightdeck:revoked:sub:"
GRACE_SECONDS = 60.0

logger = logging.getLogger(__name__)

# Keep the latest revocation of a subject: a late or replayed older one never lowers it.
_REVOKE_SUBJECT_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""


class RevocationChecker(Protocol):
    """Answers whether a verified token has been revoked."""

    async def is_revoked(self, claims: TokenClaims) -> bool:
        """True when the token's ``jti`` is denylisted or its subject was revoked after ``iat``."""
        ...


def _unix(moment: datetime | float) -> float:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:  # naive values are UTC throughout Flightdeck
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return float(moment)


def _seconds(duration: timedelta | float) -> float:
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


class RedisRevocations:
    """Revocations shared through Redis by auth and every service.

    Keys: ``flightdeck:revoked:jti:<jti>`` = ``"1"`` and
    ``flightdeck:revoked:sub:<sub>`` = revoked_at (unix seconds), both expiring when no
    token they revoke can still be accepted.

    Trade-off when Redis fails during a check: by default the check *fails open*
    (``is_revoked`` returns False and the outage is logged once), because failing closed
    would turn a Redis outage into every authenticated request failing. The exposure is
    bounded by the access-token lifetime (15 min) and limited to tokens revoked before
    or during the outage. Pass ``fail_closed=True`` to raise ``AuthUnavailable`` (503)
    instead. Writes (``revoke_*``) always raise: auth must know a revocation failed.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        fail_closed: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._fail_closed = fail_closed
        self._clock = clock
        self._failing = False
        self._revoke_subject_script = redis.register_script(_REVOKE_SUBJECT_SCRIPT)

    async def is_revoked(self, claims: TokenClaims) -> bool:
        """Both keys in one round trip (``MGET``); see the class docstring on Redis errors."""
        try:
            jti_value, subject_value = await self._redis.mget(
                [REDIS_JTI_PREFIX + claims.jti, REDIS_SUBJECT_PREFIX + claims.sub]
            )
        except (RedisError, OSError) as exc:
            if not self._failing:
                logger.warning(
                    "revocation check cannot reach Redis (%s): %s",
                    "failing closed" if self._fail_closed else "accepting unrevoked-looking tokens",
                    exc,
                )
                self._failing = True
            if self._fail_closed:
                raise AuthUnavailable("Token revocations cannot be checked right now.") from exc
            return False
        if self._failing:
            logger.info("revocation check reaches Redis again")
            self._failing = False
        if jti_value is not None:
            return True
        if subject_value is None:
            return False
        try:
            revoked_at = float(subject_value)
        except ValueError:
            logger.error("unreadable subject revocation for %r; treating as revoked", claims.sub)
            return True
        return claims.iat <= revoked_at

    async def revoke_jti(self, jti: str, expires_at: datetime | float) -> None:
        """Denylist one token until it expires (``expires_at``: its ``exp``)."""
        ttl = math.ceil(_unix(expires_at) - self._clock() + GRACE_SECONDS)
        if ttl > 0:
            await self._redis.set(REDIS_JTI_PREFIX + jti, "1", ex=ttl)

    async def revoke_subject(
        self, sub: str, revoked_at: datetime | float, ttl: timedelta | float
    ) -> None:
        """Revoke every token of ``sub`` issued at or before ``revoked_at``.

        ``ttl`` is the access-token lifetime: after ``revoked_at + ttl`` no such token can
        be valid anyway, so the key expires then. A later revocation of the same subject
        wins; an older one arriving late changes nothing.
        """
        revoked = _unix(revoked_at)
        keep_until_ms = math.ceil((revoked + _seconds(ttl) + GRACE_SECONDS) * 1000)
        await self._revoke_subject_script(
            keys=[REDIS_SUBJECT_PREFIX + sub], args=[repr(revoked), keep_until_ms]
        )


class MemoryRevocations:
    """Revocations in this process's memory (embedded mode, and the feed follower's copy).

    Same API as ``RedisRevocations``. Expired entries are dropped as new ones arrive,
    so memory stays proportional to what was revoked within one token lifetime.
    """

    PRUNE_EVERY_SECONDS = 60.0

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._jtis: dict[str, float] = {}  # jti -> keep until
        self._subjects: dict[str, tuple[float, float]] = {}  # sub -> (revoked_at, keep until)
        self._pruned_at = clock()

    def __len__(self) -> int:
        return len(self._jtis) + len(self._subjects)

    async def is_revoked(self, claims: TokenClaims) -> bool:
        """True when ``claims.jti`` is denylisted or its subject was revoked at or after ``iat``."""
        now = self.clock()
        keep_until = self._jtis.get(claims.jti)
        if keep_until is not None and keep_until > now:
            return True
        subject = self._subjects.get(claims.sub)
        return subject is not None and subject[1] > now and claims.iat <= subject[0]

    async def revoke_jti(self, jti: str, expires_at: datetime | float) -> None:
        """Denylist one token until it expires."""
        now = self.clock()
        keep_until = _unix(expires_at) + GRACE_SECONDS
        if keep_until > now:
            self._jtis[jti] = max(keep_until, self._jtis.get(jti, 0.0))
        self._maybe_prune(now)

    async def revoke_subject(
        self, sub: str, revoked_at: datetime | float, ttl: timedelta | float
    ) -> None:
        """Revoke every token of ``sub`` issued at or before ``revoked_at`` (latest wins)."""
        now = self.clock()
        revoked = _unix(revoked_at)
        keep_until = revoked + _seconds(ttl) + GRACE_SECONDS
        if keep_until > now:
            previous_revoked, previous_keep = self._subjects.get(sub, (revoked, keep_until))
            self._subjects[sub] = (max(revoked, previous_revoked), max(keep_until, previous_keep))
        self._maybe_prune(now)

    def prune(self) -> int:
        """Drop expired entries; returns how many were dropped."""
        now = self.clock()
        self._pruned_at = now
        expired_jtis = [jti for jti, until in self._jtis.items() if until <= now]
        expired_subjects = [sub for sub, (_, until) in self._subjects.items() if until <= now]
        for jti in expired_jtis:
            del self._jtis[jti]
        for sub in expired_subjects:
            del self._subjects[sub]
        return len(expired_jtis) + len(expired_subjects)

    def _maybe_prune(self, now: float) -> None:
        if now - self._pruned_at >= self.PRUNE_EVERY_SECONDS:
            self.prune()


class RevocationFeedUnavailable(RuntimeError):
    """The revocation feed could not be read (auth down, credentials rejected, bad answer)."""


class FeedItem(BaseModel):
    """One entry of ``GET /auth/internal/revocations``."""

    id: int
    jti: str | None = None
    subject: str | None = None
    revoked_at: datetime
    expires_at: datetime

    @field_validator("revoked_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class FeedPage(BaseModel):
    """A page of the revocation feed, ordered by ``id``."""

    items: list[FeedItem]
    next_cursor: int | None = None


class RevocationFeedFollower:
    """Keeps a ``MemoryRevocations`` up to date from auth's internal revocation feed.

    ``start()`` runs ``sync_once()`` every ``interval`` seconds in a background task
    (call it in the lifespan; ``await stop()`` on shutdown). Each sync reads every page
    after the last seen id, with a service token (audience ``flightdeck:auth-revocations``).
    When the feed cannot be read the last known revocations stay in force, a warning is
    logged once per outage, and ``last_sync_age`` grows (readiness/metrics can watch it).
    Until the first successful sync after start, nothing is known to be revoked.
    """

    def __init__(
        self,
        feed_url: str,
        token_provider: TokenProvider,
        memory: MemoryRevocations,
        *,
        http: httpx.AsyncClient,
        interval: float = 3.0,
        page_limit: int = 500,
        timeout: float = 5.0,
        max_pages_per_sync: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.feed_url = feed_url
        self.memory = memory
        self._last_full_sync = clock()
        self.interval = interval
        self.cursor = 0
        self.last_success_at: datetime | None = None
        self._token_provider = token_provider
        self._http = http
        self._page_limit = page_limit
        self._timeout = timeout
        self._max_pages = max_pages_per_sync
        self._clock = clock
        self._last_success_clock: float | None = None
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def last_sync_age(self) -> float | None:
        """Seconds since the last successful sync (None: never synced)."""
        if self._last_success_clock is None:
            return None
        return self._clock() - self._last_success_clock

    @property
    def running(self) -> bool:
        """Whether the background task is running."""
        return self._task is not None and not self._task.done()

    async def sync_once(self) -> int:
        """Read every new feed entry and apply it; returns how many were applied.

        Entries that have already expired advance the cursor but are not counted.
        Raises ``RevocationFeedUnavailable`` when the feed cannot be read (entries from
        pages read before the failure stay applied).
        """
        applied = 0
        try:
            for _ in range(self._max_pages):
                before = self.cursor
                page = await self._fetch_page(before)
                for item in page.items:
                    if item.id <= self.cursor:
                        continue  # a replayed entry; ids only grow
                    applied += await self._apply(item)
                    self.cursor = item.id
                if page.next_cursor is not None:
                    self.cursor = max(self.cursor, page.next_cursor)
                if page.next_cursor is None or self.cursor == before:
                    break
        except RevocationFeedUnavailable as exc:
            if not self._failing:
                logger.warning(
                    "revocation feed unavailable, keeping the last known revocations: %s", exc
                )
                self._failing = True
            raise
        if self._failing:
            logger.info("revocation feed available again")
            self._failing = False
        self._last_success_clock = self._clock()
        self.last_success_at = datetime.now(UTC)
        self.memory.prune()
        return applied

    async def run(self) -> None:
        """Sync forever, every ``interval`` seconds (cancel the task to stop)."""
        while True:
            if self._clock() - self._last_full_sync >= FULL_RESYNC_SECONDS:
                # Ids are assigned before commit: a revocation committed late can carry an
                # id below the cursor. Re-reading the (small, unexpired) set now and then
                # bounds how long such a straggler can be missed.
                self.cursor = 0
                self._last_full_sync = self._clock()
            try:
                await self.sync_once()
            except RevocationFeedUnavailable:
                pass  # logged once per outage by sync_once
            except Exception:
                logger.exception("revocation feed sync failed unexpectedly")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Run ``run()`` in a background task of the running event loop (idempotent)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="flightdeck-revocation-feed"
            )

    async def stop(self) -> None:
        """Cancel the background task and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _fetch_page(self, after: int) -> FeedPage:
        response = await self._get(after)
        if response.status_code == 401:
            # Our token may predate a key rotation or a restart of auth: retry once.
            self._token_provider.invalidate()
            response = await self._get(after)
        if response.status_code != 200:
            raise RevocationFeedUnavailable(f"feed answered HTTP {response.status_code}")
        try:
            return FeedPage.model_validate_json(response.content)
        except ValidationError as exc:
            raise RevocationFeedUnavailable("feed answered a malformed page") from exc

    async def _get(self, after: int) -> httpx.Response:
        try:
            token = await self._token_provider.token()
            return await self._http.get(
                self.feed_url,
                params={"after": after, "limit": self._page_limit},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=self._timeout,
            )
        except (AuthUnavailable, ServiceCredentialsRejected) as exc:
            raise RevocationFeedUnavailable(f"no service token: {exc}") from exc
        except httpx.HTTPError as exc:
            raise RevocationFeedUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _apply(self, item: FeedItem) -> int:
        if _unix(item.expires_at) + GRACE_SECONDS <= self.memory.clock():
            return 0
        if item.jti is not None:
            await self.memory.revoke_jti(item.jti, item.expires_at)
        if item.subject is not None:
            await self.memory.revoke_subject(
                item.subject, item.revoked_at, item.expires_at - item.revoked_at
            )
        return 1 if item.jti is not None or item.subject is not None else 0
