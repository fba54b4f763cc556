"""The benchmark's result arithmetic (bench/report.py, loaded by path: bench/ is not a package
pytest imports)."""

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[4] / "bench" / "report.py"
_SPEC = importlib.util.spec_from_file_location("bench_report_under_test", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
report = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = report  # dataclasses resolve annotations through sys.modules
_SPEC.loader.exec_module(report)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert report.percentile(values, 50) == 50.0
    assert report.percentile(values, 99) == 99.0
    assert report.percentile(values, 100) == 100.0
    assert report.percentile(list(reversed(values)), 0) == 1.0
    assert report.percentile([7.0], 99) == 7.0
    assert report.percentile([], 50) is None
    with pytest.raises(ValueError, match="between 0 and 100"):
        report.percentile(values, 101)


def test_format_count_keeps_cells_short() -> None:
    assert report.format_count(999) == "999"
    assert report.format_count(1_500) == "1.5k"
    assert report.format_count(100_000) == "100k"
    assert report.format_count(1_000_000) == "1M"
    assert report.format_count(20_000) == "20k"


def test_table_row_has_ratio_and_rss_per_service() -> None:
    stack = report.Measurement(requests=1000, seconds=10.0, p50_ms=5.0, p99_ms=250.0, errors=2)
    bare = report.Measurement(requests=4000, seconds=10.0, p50_ms=1.0, p99_ms=3.0, errors=0)
    result = report.ScenarioResult(
        name="list runs",
        rows="100k runs",
        connections=32,
        stack=stack,
        bare=bare,
        peak_rss_mb={"auth": 120.4, "pipeline": 150.6},
    )
    lines = report.markdown_table([result]).splitlines()
    assert lines[0].startswith("| scenario | rows | conns | rps |")
    assert len(lines) == 3
    assert lines[2] == (
        "| list runs | 100k runs | 32 | 100 | 5.0 | 250 | 2 | 400 | 0.25 | 120 / 151 / - |"
    )
