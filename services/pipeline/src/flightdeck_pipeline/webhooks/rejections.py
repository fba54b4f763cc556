"""Webhook requests whose signature was missing or wrong, per source address.

Two things are kept for each source, in this process:

- whether it is **blocked**: each rejection is a hit of the ``webhook_signature_failures``
  rate limit (shared through Redis when configured); once a hit is over the limit, the
  source's next requests get 429 with Retry-After before their body is read, until the
  window ends. GitHub signs its deliveries correctly, so it never gets there.
- what is **audited**: the first rejection of a source is audited at once; later ones
  within ``interval`` seconds are only counted, and the next rejection after that writes
  one event carrying the count (``rejected``) since the previous event. A flood of bad
  signatures thus writes at most one audit event per source per interval.

Memory is bounded: at most ``max_sources`` sources are tracked (the stalest are dropped).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_SOURCES = 10_000


@dataclass
class _Source:
    blocked_until: float = 0.0
    audited_at: float | None = None
    unaudited: int = 0


class SignatureRejections:
    def __init__(
        self,
        *,
        audit_interval: float,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit_interval = audit_interval
        self.max_sources = max_sources
        self.clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def blocked_for(self, source: str) -> float:
        """Seconds ``source`` is still refused for (0: not blocked)."""
        state = self._sources.get(source)
        if state is None:
            return 0.0
        return max(0.0, state.blocked_until - self.clock())

    def block(self, source: str, seconds: float) -> None:
        """Refuse ``source`` before reading its body for ``seconds``."""
        state = self._state(source)
        state.blocked_until = max(state.blocked_until, self.clock() + seconds)

    def to_audit(self, source: str) -> int:
        """Count one rejection of ``source``; how many rejections the audit event to write
        now carries (0: none is due, the rejection is only counted)."""
        state = self._state(source)
        state.unaudited += 1
        now = self.clock()
        if state.audited_at is not None and now - state.audited_at < self.audit_interval:
            return 0
        count, state.unaudited, state.audited_at = state.unaudited, 0, now
        return count

    def _state(self, source: str) -> _Source:
        state = self._sources.get(source)
        if state is None:
            state = self._sources[source] = _Source()
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        return state
