"""The mapping drain behind the webhook acknowledgement.

The pipeline answers 202 once a delivery is stored, and its worker maps the delivery later
(``flightdeck_pipeline.webhooks.worker``). So a webhook row's rate is how fast deliveries
are accepted, and how long the mapping takes is measured here: a thread reads the pipeline's
own ``/metrics`` (its port, not the ingress) every ``SAMPLE_SECONDS`` while the sender runs
and after it, and the drain ends at the first sample where
``flightdeck_webhook_mapped_total`` (summed over events and results) has grown by the number
of deliveries the sender had accepted. That counter is exact: it is incremented after each
mapping batch commits. ``flightdeck_webhook_backlog`` is not used: it is a count refreshed
every 2 s. The counter is per process, so this follows one pipeline replica (the bench runs
one).

Standard library only (a unit test in libs/common/tests/unit imports this file by its path).
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAPPED = "flightdeck_webhook_mapped_total"
ANSWERED = "flightdeck_webhook_deliveries_total"
ACCEPTED_LABELS = {"event": "workflow_run", "result": "accepted"}
SAMPLE_SECONDS = 0.5  # one read costs the pipeline about 16 ms of CPU (idle)
FETCH_TIMEOUT_SECONDS = 5.0

# Straight to the pipeline's port, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the samples of ``name`` in a Prometheus text exposition whose labels
    include ``labels`` (0 when there is none): ``flightdeck_webhook_mapped_total`` over all
    its events and results, say. Other series (``..._created`` among them) are skipped."""
    wanted = labels or {}
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        found = dict(_LABEL.findall(match.group(2) or ""))
        if all(found.get(key) == value for key, value in wanted.items()):
            total += float(match.group(3))
    return total


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    accepted: float  # flightdeck_webhook_deliveries_total{event="workflow_run",result="accepted"}
    mapped: float  # flightdeck_webhook_mapped_total, all events and results


def parse_sample(text: str, at: float) -> Sample:
    return Sample(at, metric_sum(text, ANSWERED, ACCEPTED_LABELS), metric_sum(text, MAPPED))


@dataclass(frozen=True)
class Drain:
    """How the mapping of ``accepted`` deliveries went, from the first send."""

    accepted: int
    mapped: int  # mapped since the first sample, at the last one
    seconds: float | None  # first send -> all accepted mapped (None: not within the wait)
    after_last_answer: float | None  # last answer -> all mapped
    backlog_at_last_answer: int  # accepted, not mapped, at the first sample after the answers
    peak_backlog: int  # the most accepted and not yet mapped in any sample

    @property
    def drained(self) -> bool:
        return self.seconds is not None

    @property
    def mapped_per_second(self) -> float | None:
        """Deliveries mapped per second over the drain (first send -> all mapped)."""
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.accepted / self.seconds

    @property
    def tail_per_second(self) -> float | None:
        """The worker's rate once the answers stopped: the backlog left then, over the time
        it took (None when nothing was left)."""
        if not self.after_last_answer or self.backlog_at_last_answer <= 0:
            return None
        return self.backlog_at_last_answer / self.after_last_answer


def drain_summary(
    samples: Sequence[Sample], accepted: int, first_send: float, last_answer: float
) -> Drain:
    """``samples`` in time order, the first taken before ``first_send`` (the baseline);
    ``accepted``: the deliveries the sender had answered 202; ``first_send`` and
    ``last_answer``: the sender's times (``time.monotonic()``)."""
    if not samples:
        raise ValueError("no samples: the baseline is taken before the first send")
    base = samples[0]
    drained_at = next((s.at for s in samples if s.mapped - base.mapped >= accepted), None)
    tail = next((s for s in samples if s.at >= last_answer), samples[-1])
    peak = max((s.accepted - base.accepted) - (s.mapped - base.mapped) for s in samples)
    return Drain(
        accepted=accepted,
        mapped=round(samples[-1].mapped - base.mapped),
        seconds=max(0.0, drained_at - first_send) if drained_at is not None else None,
        after_last_answer=max(0.0, drained_at - last_answer) if drained_at is not None else None,
        backlog_at_last_answer=max(0, accepted - round(tail.mapped - base.mapped)),
        peak_backlog=max(0, round(peak)),
    )


def drain_cell(drain: Drain) -> str:
    """The short form for the table's rows cell."""
    rate = drain.mapped_per_second
    if drain.seconds is None:
        return f"NOT drained: {drain.mapped:,} of {drain.accepted:,} mapped"
    per_second = f", {rate:,.0f} mapped/s" if rate is not None else ""
    return f"drained {drain.seconds:.1f} s after the first send{per_second}"


def drain_note(drain: Drain) -> str:
    """The long form for the notes."""
    if drain.seconds is None:
        return (
            f"mapping NOT drained: {drain.mapped:,} of {drain.accepted:,} accepted deliveries "
            f"mapped when the wait ended (peak backlog {drain.peak_backlog:,})"
        )
    rate = drain.mapped_per_second
    tail = drain.tail_per_second
    tail_text = (
        f"; {drain.backlog_at_last_answer:,} were left at the last answer, mapped in "
        f"{drain.after_last_answer or 0:.1f} s more ({tail:,.0f}/s)"
        if tail is not None
        else "; none left at the last answer"
    )
    return (
        f"mapping: all {drain.accepted:,} accepted deliveries mapped {drain.seconds:.1f} s after "
        f"the first send ({rate or 0:,.0f}/s over the drain{tail_text}), peak backlog "
        f"{drain.peak_backlog:,}"
    )


class DrainWatch:
    """Samples the pipeline's ``/metrics`` in a thread from :meth:`start` (which takes the
    baseline before returning) until :meth:`wait_for` saw ``accepted`` mapped or gave up."""

    def __init__(self, metrics_url: str, every: float = SAMPLE_SECONDS) -> None:
        self.metrics_url = metrics_url
        self.every = every
        self.samples: list[Sample] = []
        self.failures = 0
        self.read_seconds: list[float] = []  # how long each read of /metrics took
        self._target: float | None = None
        self._stop = threading.Event()
        self._reached = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drain-watch", daemon=True)

    def __enter__(self) -> DrainWatch:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        baseline = self._sample()
        if baseline is None:
            raise RuntimeError(f"cannot read {self.metrics_url}")
        self.samples.append(baseline)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def wait_for(self, accepted: int, timeout: float) -> bool:
        """Wait until ``accepted`` more deliveries than at the baseline were mapped (True),
        or ``timeout`` seconds passed (False); sampling stops either way."""
        self._target = self.samples[0].mapped + accepted
        if self.samples[-1].mapped >= self._target:
            self._reached.set()
        reached = self._reached.wait(timeout)
        self.stop()
        return reached

    def summary(self, accepted: int, first_send: float, last_answer: float) -> Drain:
        return drain_summary(self.samples, accepted, first_send, last_answer)

    def cost_note(self) -> str:
        """How often /metrics was read and how long a read took (the baseline's: before the
        load, about the pipeline's CPU per read; the median: under load, mostly waiting)."""
        reads = sorted(self.read_seconds)
        if not reads:
            return f"{self.metrics_url} not read"
        median = reads[len(reads) // 2]
        return (
            f"/metrics read {len(reads)} times every {self.every:g} s (baseline "
            f"{self.read_seconds[0] * 1000:.0f} ms, median {median * 1000:.0f} ms)"
        )

    def _sample(self) -> Sample | None:
        """The counters now, timed when their answer came (a drain is never shorter than
        it was)."""
        began = time.monotonic()
        try:
            with _OPENER.open(self.metrics_url, timeout=FETCH_TIMEOUT_SECONDS) as answer:
                text = answer.read().decode()
        except OSError:
            self.failures += 1
            return None
        at = time.monotonic()
        self.read_seconds.append(at - began)
        return parse_sample(text, at)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            sample = self._sample()
            if sample is None:
                continue
            self.samples.append(sample)
            if self._target is not None and sample.mapped >= self._target:
                self._reached.set()
                return
