"""Results: percentiles, the markdown table, the machine description. Standard library only
(a unit test in libs/common/tests/unit imports this file by its path)."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("auth", "pipeline", "admin")


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
