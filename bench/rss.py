"""Resident memory of the service processes while a scenario runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bench.report import RssTimeline

SAMPLE_SECONDS = 0.2


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB (None when the process is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


class RssSampler:
    """Peak resident memory (MB) of some processes, sampled every 200 ms in a thread; with
    ``timeline_every``, also a sample of each every that many seconds (from the start, and
    one at the end) in ``timeline``."""

    def __init__(self, pids: dict[str, int], timeline_every: float | None = None) -> None:
        self.pids = pids
        self.peaks: dict[str, float] = {}
        self.timeline: RssTimeline = []
        self._every = timeline_every
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> dict[str, float]:
        current = {name: rss_mb(pid) for name, pid in self.pids.items()}
        return {name: mb for name, mb in current.items() if mb is not None}

    def _sample(self) -> None:
        next_point = self._started
        while True:
            current = self._read()
            for name, megabytes in current.items():
                self.peaks[name] = max(self.peaks.get(name, 0.0), megabytes)
            now = time.monotonic()
            if self._every is not None and now >= next_point:
                self.timeline.append((now - self._started, current))
                next_point += self._every
            if self._stop.wait(SAMPLE_SECONDS):
                if self._every is not None:
                    self.timeline.append((time.monotonic() - self._started, self._read()))
                return

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
