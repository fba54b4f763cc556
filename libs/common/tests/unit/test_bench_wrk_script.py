"""wrk's Lua scripts (bench/wrk_script.py, loaded by path: bench/ is not a package pytest
imports)."""

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[4] / "bench" / "wrk_script.py"
_SPEC = importlib.util.spec_from_file_location("bench_wrk_script_under_test", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
wrk_script = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = wrk_script  # dataclasses resolve annotations through sys.modules
_SPEC.loader.exec_module(wrk_script)
Request = wrk_script.Request


def test_one_static_request_is_wrks_own() -> None:
    script = wrk_script.lua_script(
        [Request("/auth/login", method="POST", body='{"u": "a"}', headers=(("X-A", "1"),))]
    )
    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["X-A"] = "1"' in script
    assert 'wrk.body = "{\\"u\\": \\"a\\"}"' in script
    assert 'wrk.path = "/auth/login"' in script
    assert "request = function" not in script  # no Lua call per request
    assert "BENCH_JSON" in script


def test_a_random_id_is_drawn_per_request() -> None:
    script = wrk_script.lua_script([Request("/runs/{id}/jobs", id_max=500)])
    assert 'add(1, "GET", "/runs/", 500, "/jobs", {}, nil)' in script
    assert "math.randomseed" in script
    assert "wrk.path" not in script


def test_a_mix_adds_each_request_with_its_weight() -> None:
    token = (("Authorization", "Bearer t"),)
    script = wrk_script.lua_script(
        [
            Request("/pipelines?limit=50", headers=token, weight=40),
            Request("/pipelines/{id}", headers=token, id_max=100, weight=20),
            Request("/bench/healthz", weight=5),
        ]
    )
    assert (
        'add(40, "GET", "/pipelines?limit=50", 0, "", {["Authorization"] = "Bearer t"}, nil)'
        in script
    )
    assert 'add(20, "GET", "/pipelines/", 100, "", {["Authorization"] = "Bearer t"}, nil)' in script
    assert 'add(5, "GET", "/bench/healthz", 0, "", {}, nil)' in script
    # One draw in [1, total] picks the first entry whose cumulative weight reaches it.
    assert "math.random(1, total)" in script
    assert script.index("add(40") < script.index("add(20") < script.index("add(5")


def test_bad_mixes_are_refused() -> None:
    with pytest.raises(ValueError, match="no request"):
        wrk_script.lua_script([])
    with pytest.raises(ValueError, match="positive"):
        wrk_script.lua_script([Request("/a", weight=0), Request("/b")])
    with pytest.raises(ValueError, match="id_max"):
        wrk_script.lua_script([Request("/runs/{id}")])


def test_a_pause_makes_a_light_probe() -> None:
    assert "delay = function() return 25 end" in wrk_script.lua_script([Request("/h")], 25)
    assert "delay" not in wrk_script.lua_script([Request("/h")])
    with pytest.raises(ValueError, match="negative"):
        wrk_script.lua_script([Request("/h")], -1)
