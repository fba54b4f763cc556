"""Webhook requests refused for their signature, per source (IPv4 address or IPv6 /64).

Two things are kept for each source, in this process:

- whether it is **flagged**: each rejection (a missing or wrong signature, a body that did
  not arrive within the deadline) is a hit of the ``webhook_signature_failures`` rate
  limit (shared through Redis when configured); once a hit is over the limit, the source
  is flagged until the window ends. A flagged source's requests are limited before their
  body is read: at most ``FLAGGED_CONCURRENT_READS`` of its bodies are read at once in a
  process (more get 429 with Retry-After, the body unread), each within
  ``FLAGGED_BODY_READ_SECONDS`` instead of the configured deadline. It is not refused
  outright: GitHub delivers every customer's webhooks from the same addresses, so a
  webhook someone else points here with a wrong secret must not shut out the signed
  deliveries GitHub sends from that address (they arrive at once, and are accepted).
- what is **audited**: rejections are only tallied here; :meth:`SignatureRejections.take`
  hands out one summary per source (how many, why, which events, the first delivery ids,
  when) and starts new tallies. The pipeline's lifespan writes those summaries to the
  audit outbox every ``webhook_rejection_audit_interval_seconds`` and once more when it
  stops, so a flood of bad signatures writes at most one audit event per source per
  interval instead of one per request.

Memory is bounded: at most ``max_sources`` sources are tallied per interval; rejections
from further sources go to one tally for all of them (``source`` ``"other"``, with how
many distinct sources it holds up to the bound). Flags are kept for at most
``max_sources`` sources (the stalest dropped: a dropped source is flagged again by its
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
# A flagged source: bodies read at once per process, and how long each may take to arrive.
FLAGGED_CONCURRENT_READS = 16
FLAGGED_BODY_READ_SECONDS = 2.0
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
    tally: _Tally = field(repr=False)


class SignatureRejections:
    def __init__(
        self,
        *,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_sources = max_sources
        self.clock = clock
        self._flagged: OrderedDict[str, float] = OrderedDict()
        self._reading: dict[str, int] = {}
        self._tallies: dict[str, _Tally] = {}

    def flagged_for(self, source: str) -> float:
        """Seconds ``source`` stays flagged (0: not flagged)."""
        until = self._flagged.get(source)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._flagged[source]
            return 0.0
        return left

    def flag(self, source: str, seconds: float) -> None:
        """Limit ``source``'s requests before their body is read for ``seconds``."""
        until = max(self._flagged.pop(source, 0.0), self.clock() + seconds)
        self._flagged[source] = until
        while len(self._flagged) > self.max_sources:
            self._flagged.popitem(last=False)

    def start_read(self, source: str) -> bool:
        """Whether a flagged ``source`` may have one more body read now (then counted
        until :meth:`end_read`)."""
        reading = self._reading.get(source, 0)
        if reading >= FLAGGED_CONCURRENT_READS:
            return False
        self._reading[source] = reading + 1
        return True

    def end_read(self, source: str) -> None:
        reading = self._reading.pop(source, 0) - 1
        if reading > 0:
            self._reading[source] = reading

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
        """Tally one request of a flagged ``source`` refused before its body was read."""
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
            summaries.append(RejectionSummary(source, data, tally))
        return summaries

    def put_back(self, summaries: list[RejectionSummary]) -> None:
        """Return summaries that could not be written: the next :meth:`take` counts them
        with what arrived since (their events are not lost to a failed write)."""
        for summary in summaries:
            earlier = summary.tally
            current = self._tallies.get(summary.source)
            if current is None:
                self._tallies[summary.source] = earlier
                continue
            current.first_at = earlier.first_at
            current.rejected += earlier.rejected
            current.throttled += earlier.throttled
            current.reasons.update(earlier.reasons)
            current.events.update(earlier.events)
            current.delivery_ids = (earlier.delivery_ids + current.delivery_ids)[:MAX_DELIVERY_IDS]
            current.sources |= earlier.sources

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
