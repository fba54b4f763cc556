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


def test_fanout_summary_counts_each_event_once_per_client() -> None:
    # Two measured deliveries (run ids 1, 2) on 2 clients: 4 events expected.
    webhooks = {1: (10.0, 10.1), 2: (11.0, 11.05)}
    receipts = [
        (0, 1, 10.3),  # 200 ms after the ack, 300 after the send
        (1, 1, 10.05),  # before the ack was read: 0 ms from the ack
        (0, 2, 11.25),
        (0, 2, 11.3),  # a second copy on client 0
        (1, 99, 11.2),  # not a measured delivery (warm-up)
    ]
    summary = report.fanout_summary(webhooks, receipts, clients=2)
    assert (summary.expected, summary.delivered, summary.missing) == (4, 3, 1)
    assert summary.duplicates == 1
    assert summary.from_ack_ms == pytest.approx([200.0, 0.0, 200.0])
    assert summary.from_send_ms == pytest.approx([300.0, 50.0, 250.0])


def test_rss_trend_flat_and_growing() -> None:
    flat = [(0.0, 120.0), (30.0, 125.0), (60.0, 126.0), (90.0, 126.5), (120.0, 127.0)]
    trend = report.rss_trend(flat, peak=128.0)
    assert trend is not None
    assert (trend.start, trend.after_minute, trend.half, trend.end) == (120.0, 126.0, 126.0, 127.0)
    assert trend.peak == 128.0
    assert trend.second_half_growth == pytest.approx(1.0)
    assert trend.flat
    growing = [(0.0, 100.0), (10.0, 110.0), (20.0, 120.0), (30.0, 135.0), (40.0, 150.0)]
    trend = report.rss_trend(growing)
    assert trend is not None
    assert trend.after_minute is None  # shorter than a minute
    assert trend.half == 120.0
    assert trend.peak == 150.0
    assert trend.second_half_growth_percent == pytest.approx(25.0)
    assert not trend.flat
    assert report.rss_trend([]) is None


def test_soak_note_states_both_verdicts() -> None:
    trend = report.rss_trend([(0.0, 190.0), (60.0, 200.0), (120.0, 230.0)])
    assert trend is not None
    note = report.soak_rss_note("pipeline", trend)
    assert note.startswith("soak RSS pipeline: start 190, after 1 min 200, end 230, peak 230 MB")
    assert "+30.0 MB (+15.0 %) -> NOT flat" in note
    assert "peak <= 200 MB: NO" in note


def test_rss_timeline_table_has_a_column_per_service() -> None:
    timeline = [(0.0, {"auth": 140.2, "pipeline": 125.0}), (10.4, {"auth": 141.0})]
    assert report.service_series(timeline, "pipeline") == [(0.0, 125.0)]
    lines = report.rss_timeline_table(timeline).splitlines()
    assert lines[0] == "| s | auth MB | pipeline MB | admin MB |"
    assert lines[2:] == ["| 0 | 140 | 125 | - |", "| 10 | 141 | - | - |"]


def test_soak_note_reads_a_tiny_shrink_as_zero() -> None:
    trend = report.rss_trend([(0.0, 140.0), (10.0, 140.02), (20.0, 140.0)])
    assert trend is not None
    assert "second half +0.0 MB (+0.0 %) -> flat" in report.soak_rss_note("admin", trend)
