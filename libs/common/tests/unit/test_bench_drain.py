"""The webhook mapping drain of the benchmark (bench/drain.py, loaded by path: bench/ is not a
package pytest imports): reading the pipeline's counters and summing up a drain."""

import importlib.util
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[4] / "bench" / "drain.py"
_SPEC = importlib.util.spec_from_file_location("bench_drain_under_test", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
drain = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = drain  # dataclasses resolve annotations through sys.modules
_SPEC.loader.exec_module(drain)

# As prometheus_client writes it: HELP/TYPE, the _total samples, the _created ones.
EXPOSITION = """\
# HELP flightdeck_webhook_mapped_total Deliveries mapped by the workers, by event and result.
# TYPE flightdeck_webhook_mapped_total counter
flightdeck_webhook_mapped_total{event="workflow_run",result="processed"} 1200.0
flightdeck_webhook_mapped_total{event="workflow_run",result="failed"} 3.0
flightdeck_webhook_mapped_total{event="push",result="ignored"} 7.0
# HELP flightdeck_webhook_mapped_created Deliveries mapped by the workers, by event and result.
# TYPE flightdeck_webhook_mapped_created gauge
flightdeck_webhook_mapped_created{event="workflow_run",result="processed"} 1.7641e+09
# HELP flightdeck_webhook_deliveries_total Webhook deliveries answered, by event and result.
# TYPE flightdeck_webhook_deliveries_total counter
flightdeck_webhook_deliveries_total{event="workflow_run",result="accepted"} 1210.0
flightdeck_webhook_deliveries_total{event="workflow_run",result="duplicate"} 2.0
flightdeck_webhook_deliveries_total{event="ping",result="pong"} 1.0
flightdeck_webhook_mapped_total_extra{event="x"} 99.0
flightdeck_webhook_backlog 5.0
odd_labels{path="/a,b",quote="say \\"hi\\"",result="accepted"} 4.0
"""


def test_metric_sum_adds_every_label_set_of_one_name() -> None:
    assert drain.metric_sum(EXPOSITION, "flightdeck_webhook_mapped_total") == 1210.0
    assert drain.metric_sum(EXPOSITION, "flightdeck_webhook_backlog") == 5.0
    assert drain.metric_sum(EXPOSITION, "flightdeck_webhook_missing_total") == 0.0


def test_metric_sum_filters_on_labels() -> None:
    accepted = drain.metric_sum(
        EXPOSITION,
        "flightdeck_webhook_deliveries_total",
        {"event": "workflow_run", "result": "accepted"},
    )
    assert accepted == 1210.0
    failed = drain.metric_sum(EXPOSITION, "flightdeck_webhook_mapped_total", {"result": "failed"})
    assert failed == 3.0
    # Commas and escaped quotes inside label values do not split the label set.
    assert drain.metric_sum(EXPOSITION, "odd_labels", {"result": "accepted"}) == 4.0


def test_parse_sample_reads_accepted_and_mapped() -> None:
    sample = drain.parse_sample(EXPOSITION, at=12.5)
    assert (sample.at, sample.accepted, sample.mapped) == (12.5, 1210.0, 1210.0)


def _samples(*rows: tuple[float, float, float]) -> list[object]:
    return [drain.Sample(at, accepted, mapped) for at, accepted, mapped in rows]


def test_drain_ends_at_the_first_sample_with_everything_mapped() -> None:
    # Baseline (100 accepted and mapped earlier), then 1,000 accepted by t=10 and mapped by 14.
    samples = _samples(
        (0.0, 100, 100),
        (2.0, 400, 250),
        (6.0, 800, 500),
        (10.5, 1100, 800),  # the first sample after the last answer (t=10): 300 left
        (12.0, 1100, 1000),
        (14.0, 1100, 1100),  # all mapped
        (14.2, 1100, 1100),
    )
    summary = drain.drain_summary(samples, accepted=1000, first_send=1.0, last_answer=10.0)
    assert summary.drained
    assert summary.seconds == pytest.approx(13.0)
    assert summary.after_last_answer == pytest.approx(4.0)
    assert summary.mapped == 1000
    assert summary.mapped_per_second == pytest.approx(1000 / 13.0)
    assert summary.backlog_at_last_answer == 300
    assert summary.tail_per_second == pytest.approx(300 / 4.0)
    assert summary.peak_backlog == 300
    assert drain.drain_cell(summary) == "drained 13.0 s after the first send, 77 mapped/s"
    note = drain.drain_note(summary)
    assert "all 1,000 accepted deliveries mapped 13.0 s after the first send (77/s" in note
    assert "300 were left at the last answer, mapped in 4.0 s more (75/s)" in note


def test_a_drain_that_kept_up_has_no_tail() -> None:
    samples = _samples((0.0, 0, 0), (1.0, 50, 50), (2.0, 100, 100))
    summary = drain.drain_summary(samples, accepted=100, first_send=0.5, last_answer=1.9)
    assert summary.seconds == pytest.approx(1.5)
    assert summary.backlog_at_last_answer == 0
    assert summary.tail_per_second is None
    assert "none left at the last answer" in drain.drain_note(summary)


def test_a_drain_not_finished_says_so() -> None:
    samples = _samples((0.0, 0, 0), (5.0, 100, 40), (9.0, 100, 60))
    summary = drain.drain_summary(samples, accepted=100, first_send=1.0, last_answer=4.0)
    assert not summary.drained
    assert summary.seconds is None
    assert summary.mapped_per_second is None
    assert summary.mapped == 60
    assert summary.peak_backlog == 60
    assert drain.drain_cell(summary) == "NOT drained: 60 of 100 mapped"
    assert drain.drain_note(summary).startswith("mapping NOT drained: 60 of 100")


def test_drain_summary_needs_the_baseline() -> None:
    with pytest.raises(ValueError, match="baseline"):
        drain.drain_summary([], accepted=1, first_send=0.0, last_answer=0.0)


class _Counters(BaseHTTPRequestHandler):
    mapped = 10

    def do_GET(self) -> None:
        _Counters.mapped += 5  # every read finds 5 more mapped
        body = (
            f'flightdeck_webhook_deliveries_total{{event="workflow_run",result="accepted"}} 30.0\n'
            f'flightdeck_webhook_mapped_total{{event="workflow_run",result="processed"}} '
            f"{_Counters.mapped}.0\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def metrics_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counters)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def test_watch_samples_until_the_accepted_are_mapped(metrics_url: str) -> None:
    _Counters.mapped = 10
    with drain.DrainWatch(metrics_url, every=0.01) as watch:
        baseline = watch.samples[0].mapped  # taken by start(), before returning
        assert baseline == 15.0
        assert watch.wait_for(20, timeout=5.0)
    assert watch.samples[-1].mapped >= baseline + 20
    assert watch.failures == 0
    assert len(watch.read_seconds) == len(watch.samples)
    assert watch.cost_note().startswith(f"/metrics read {len(watch.samples)} times every 0.01 s")
    first = watch.samples[0].at
    summary = watch.summary(20, first_send=first, last_answer=first)
    assert summary.drained
    assert summary.mapped >= 20


def test_watch_gives_up_after_the_timeout(metrics_url: str) -> None:
    _Counters.mapped = 10
    watch = drain.DrainWatch(metrics_url, every=0.01)
    watch.start()
    assert not watch.wait_for(1_000_000, timeout=0.2)
    assert not watch._thread.is_alive()
