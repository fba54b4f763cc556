"""Webhook requests refused for their signature, per source (IPv4 address or IPv6 /64).

Two things are kept for each source, in this process:

- whether it is **blocked**: each rejection (a missing or wrong signature, a body that did
  not arrive within the deadline) is a hit of the ``webhook_signature_failures`` rate
  limit (shared through Redis when configured); once a hit is over the limit, the source's
  next requests get 429 with Retry-After before their body is read, until the window ends.
  GitHub signs its deliveries correctly, so it never gets there.
- what is **audited**: rejections are only tallied here; :meth:`SignatureRejections.take`
  hands out one summary per source (how many, why, which events, the first delivery ids,
  when) and starts new tallies. The pipeline's lifespan writes those summaries to the
  audit outbox every ``webhook_rejection_audit_interval_seconds`` and once more when it
  stops, so a flood of bad signatures writes at most one audit event per source per
  interval instead of one per request.

Memory is bounded: at most ``max_sources`` sources are tallied per interval; rejections
from further sources go to one tally for all of them (``source`` ``"other"``, with how
many distinct sources it holds up to the bound). Blocks are kept for at most
``max_sources`` sources (the stalest dropped: a dropped source is blocked again by its
next over-limit rejection, as the shared limit still counts it).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flightdeck_common.db import utcnow

MAX_SOURCES = 10_000
MAX_DELIVERY_IDS = 20
OTHER_SOURCES = "other"


@dataclass
class _Tally:
    first_at: datetime
    last_at: datetime
    rejected: int = 0
    throttled: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    delivery_ids: list[str] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RejectionSummary:
    """What one audit event says about one source's rejected requests in an interval."""

    source: str
    data: dict[str, Any]


class SignatureRejections:
    def __init__(
        self,
        *,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_sources = max_sources
        self.clock = clock
        self._blocked: OrderedDict[str, float] = OrderedDict()
        self._tallies: dict[str, _Tally] = {}

    def blocked_for(self, source: str) -> float:
        """Seconds ``source`` is still refused for (0: not blocked)."""
        until = self._blocked.get(source)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._blocked[source]
            return 0.0
        return left

    def block(self, source: str, seconds: float) -> None:
        """Refuse ``source`` before reading its body for ``seconds``."""
        until = max(self._blocked.pop(source, 0.0), self.clock() + seconds)
        self._blocked[source] = until
        while len(self._blocked) > self.max_sources:
            self._blocked.popitem(last=False)

    def rejected(
        self, source: str, reason: str, event: str | None, delivery_id: str | None
    ) -> None:
        """Tally one rejected request of ``source`` (``reason``: missing_signature,
        wrong_signature, body_read_deadline)."""
        tally = self._tally(source)
        tally.rejected += 1
        tally.reasons[reason] += 1
        tally.events[event or "unknown"] += 1
        if delivery_id and len(tally.delivery_ids) < MAX_DELIVERY_IDS:
            tally.delivery_ids.append(delivery_id[:64])

    def throttled(self, source: str) -> None:
        """Tally one request of a blocked ``source`` refused before its body was read."""
        self._tally(source).throttled += 1

    def pending(self) -> int:
        """How many sources have a tally that :meth:`take` would hand out."""
        return len(self._tallies)

    def take(self) -> list[RejectionSummary]:
        """One summary per tallied source since the last call; the tallies start over."""
        tallies, self._tallies = self._tallies, {}
        summaries = []
        for source, tally in tallies.items():
            data: dict[str, Any] = {
                "rejected": tally.rejected,
                "throttled": tally.throttled,
                "reasons": dict(sorted(tally.reasons.items())),
                "events": dict(sorted(tally.events.items())),
                "delivery_ids": tally.delivery_ids,
                "first_at": tally.first_at.isoformat(),
                "last_at": tally.last_at.isoformat(),
            }
            if source == OTHER_SOURCES:
                data["sources"] = len(tally.sources)
            summaries.append(RejectionSummary(source, data))
        return summaries

    def _tally(self, source: str) -> _Tally:
        now = utcnow()
        tally = self._tallies.get(source)
        if tally is None:
            if len(self._tallies) >= self.max_sources and source != OTHER_SOURCES:
                other = self._tally(OTHER_SOURCES)
                if len(other.sources) < self.max_sources:
                    other.sources.add(source)
                return other
            tally = self._tallies[source] = _Tally(first_at=now, last_at=now)
        tally.last_at = now
        return tally
