"""Results: percentiles, the markdown table, the machine description, the SSE fan-out's
event accounting and the soak's memory trend. Standard library only (a unit test in
libs/common/tests/unit imports this file by its path)."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("auth", "pipeline", "admin")
# "Flat" memory over a soak: it grew by less than this over the second half.
FLAT_GROWTH_PERCENT = 10.0
RSS_LIMIT_MB = 200.0

# (seconds since the start, {service: resident MB}) samples.
RssTimeline = list[tuple[float, dict[str, float]]]


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0..100) of ``values`` by the nearest-rank method (the
    smallest value with at least p% of the values at or below it); None when empty."""
    if not 0 <= p <= 100:
        raise ValueError("p must be between 0 and 100")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Measurement:
    """One load run against one target (the stack or the bare reference)."""

    requests: int  # served (2xx/3xx) during the measured run
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    client_cpu_seconds: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ScenarioResult:
    name: str
    rows: str
    connections: int
    stack: Measurement | None
    bare: Measurement | None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.stack is None or self.bare is None or self.bare.rps <= 0:
            return None
        return self.stack.rps / self.bare.rps


def format_count(value: int) -> str:
    """1234 -> '1.2k', 100000 -> '100k', 1000000 -> '1M' (table cells stay short)."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if value >= size:
            scaled = value / size
            text = f"{scaled:.1f}" if scaled < 10 and value % size else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return str(value)


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def markdown_table(results: Sequence[ScenarioResult]) -> str:
    """One row per scenario: the stack's figures, the bare reference's rps and the ratio."""
    header = (
        "| scenario | rows | conns | rps | p50 ms | p99 ms | errors | bare rps | ratio "
        "| RSS MB auth / pipeline / admin |"
    )
    lines = [header, "|" + "---|" * 10]
    for result in results:
        stack = result.stack
        rss = " / ".join(
            f"{result.peak_rss_mb[name]:.0f}" if name in result.peak_rss_mb else "-"
            for name in SERVICES
        )
        ratio = result.ratio
        cells = [
            result.name,
            result.rows,
            str(result.connections),
            _number(stack.rps if stack else None),
            _number(stack.p50_ms if stack else None),
            _number(stack.p99_ms if stack else None),
            str(stack.errors) if stack else "-",
            _number(result.bare.rps if result.bare else None),
            f"{ratio:.2f}" if ratio is not None else "-",
            rss,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_description(postgres_version: str) -> dict[str, str]:
    """Cores, RAM, CPU model, kernel, Python and PostgreSQL versions, load when measured."""
    cpu_model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if match:
            cpu_model = match.group(1).strip()
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        match = re.search(r"^MemTotal:\s*(\d+) kB", meminfo.read_text(), re.MULTILINE)
        if match:
            memory = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB"
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
        wrk_version = (wrk.stdout or wrk.stderr).splitlines()[0].split(" Copyright")[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        wrk_version = "not installed"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": str(os.cpu_count()),
        "memory": memory,
        "cpu": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "wrk": wrk_version,
        "load average at start": " ".join(f"{value:.2f}" for value in load),
    }


def definition_list(items: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in items.items())


# -- SSE fan-out -----------------------------------------------------------------------


@dataclass(frozen=True)
class FanoutSummary:
    """Which of the expected events (every measured webhook, on every connected client)
    arrived, and how long after their webhook."""

    expected: int
    delivered: int
    duplicates: int
    from_ack_ms: list[float]  # receipt - webhook acknowledged (0 when it came first)
    from_send_ms: list[float]  # receipt - webhook sent

    @property
    def missing(self) -> int:
        return self.expected - self.delivered


def fanout_summary(
    webhooks: Mapping[int, tuple[float, float]],
    receipts: Sequence[tuple[int, int, float]],
    clients: int,
) -> FanoutSummary:
    """``webhooks``: run id -> (sent, acknowledged) times of the measured, acknowledged
    deliveries; ``receipts``: (client, run id, received) of every event the clients read
    (others' run ids are ignored, a second copy on one client is a duplicate);
    ``clients``: how many were connected."""
    first: set[tuple[int, int]] = set()
    duplicates = 0
    from_ack: list[float] = []
    from_send: list[float] = []
    for client, run_id, received in receipts:
        times = webhooks.get(run_id)
        if times is None:
            continue
        if (client, run_id) in first:
            duplicates += 1
            continue
        first.add((client, run_id))
        sent, acked = times
        from_ack.append(max(0.0, received - acked) * 1000)
        from_send.append((received - sent) * 1000)
    return FanoutSummary(len(webhooks) * clients, len(first), duplicates, from_ack, from_send)


# -- soak memory -----------------------------------------------------------------------


def sample_at(series: Sequence[tuple[float, float]], seconds: float) -> float | None:
    """The first sample taken at or after ``seconds`` (None when the series ends before)."""
    return next((value for at, value in series if at >= seconds), None)


@dataclass(frozen=True)
class RssTrend:
    """One process's resident memory over a soak (MB)."""

    start: float
    after_minute: float | None
    half: float
    end: float
    peak: float

    @property
    def second_half_growth(self) -> float:
        return self.end - self.half

    @property
    def second_half_growth_percent(self) -> float:
        return 100 * self.second_half_growth / self.half if self.half > 0 else 0.0

    @property
    def flat(self) -> bool:
        return self.second_half_growth_percent < FLAT_GROWTH_PERCENT


def rss_trend(series: Sequence[tuple[float, float]], peak: float | None = None) -> RssTrend | None:
    """The trend of ``(seconds, MB)`` samples in time order; ``peak`` when sampled finer
    than the series (else the series' maximum). None without samples."""
    if not series:
        return None
    values = [value for _, value in series]
    half = sample_at(series, series[-1][0] / 2)
    return RssTrend(
        start=values[0],
        after_minute=sample_at(series, 60.0),
        half=half if half is not None else values[-1],
        end=values[-1],
        peak=max([*values, peak or 0.0]),
    )


def service_series(timeline: RssTimeline, service: str) -> list[tuple[float, float]]:
    return [(at, sample[service]) for at, sample in timeline if service in sample]


def soak_rss_note(service: str, trend: RssTrend) -> str:
    """One line: the figures and both verdicts (flat; under the RSS limit)."""
    verdict = "flat" if trend.flat else "NOT flat"
    under = "yes" if trend.peak <= RSS_LIMIT_MB else "NO"
    # + 0.0: a shrink that rounds to zero reads +0.0, not -0.0.
    growth = round(trend.second_half_growth, 1) + 0.0
    percent = round(trend.second_half_growth_percent, 1) + 0.0
    return (
        f"soak RSS {service}: start {trend.start:.0f}, after 1 min {_number(trend.after_minute)}, "
        f"end {trend.end:.0f}, peak {trend.peak:.0f} MB; second half "
        f"{growth:+.1f} MB ({percent:+.1f} %) -> "
        f"{verdict} (< {FLAT_GROWTH_PERCENT:g} %); peak <= {RSS_LIMIT_MB:g} MB: {under}"
    )


def rss_timeline_table(timeline: RssTimeline) -> str:
    """The samples as a markdown table: one row per sample, one column per service."""
    lines = ["| s | " + " | ".join(f"{name} MB" for name in SERVICES) + " |"]
    lines.append("|" + "---|" * (len(SERVICES) + 1))
    for at, sample in timeline:
        cells = [f"{sample[name]:.0f}" if name in sample else "-" for name in SERVICES]
        lines.append(f"| {at:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
