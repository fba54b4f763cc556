"""Grouping py-spy samples by library (bench/profile_buckets.py, loaded by path)."""

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[4] / "bench" / "profile_buckets.py"
_SPEC = importlib.util.spec_from_file_location("bench_profile_buckets_under_test", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
buckets = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = buckets
_SPEC.loader.exec_module(buckets)

LOOP = "main (uvicorn/main.py:1);Runner.run (asyncio/runners.py:118)"
RAW = "\n".join(
    [
        # The leaf decides: SQLAlchemy under our handler under the middleware.
        f"{LOOP};__call__ (flightdeck_common/middleware/request_id.py:26);"
        "list_pipelines (flightdeck_pipeline/runs/router.py:66);"
        "execute (sqlalchemy/orm/session.py:2300) 7",
        # Pydantic's Rust core shows as the Python frame calling it.
        f"{LOOP};list_pipelines (flightdeck_pipeline/runs/router.py:77);"
        "model_validate (pydantic/main.py:792) 3",
        # No library frame at the leaf: the first matching frame above it.
        f"{LOOP};list_pipelines (flightdeck_pipeline/runs/router.py:77);<genexpr> (x.py:1) 2",
        # A worker thread waiting for work is not the event loop's CPU.
        "run (threading.py:982);get (queue.py:171) 50",
        "not a sample line",
    ]
)


def test_samples_count_for_the_library_at_the_leaf() -> None:
    counts, total = buckets.groups(RAW)
    assert total == 12
    assert counts == {
        "PostgreSQL driver + SQLAlchemy": 7,
        "pydantic validation + JSON": 3,
        "our handlers and repositories": 2,
    }


def test_main_prints_shares_and_refuses_a_profile_without_the_loop(tmp_path: Path) -> None:
    raw = tmp_path / "list.raw"
    raw.write_text(RAW)
    assert buckets.main([str(raw)]) == 0
    idle = tmp_path / "idle.raw"
    idle.write_text("run (threading.py:982);get (queue.py:171) 50\n")
    assert buckets.main([str(idle)]) == 1
    assert buckets.main([]) == 2
