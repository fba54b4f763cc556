"""wrk's Lua scripts: one request (static, or with a random id per request) or a weighted
mix of requests drawn per request. Standard library only (a unit test in
libs/common/tests/unit loads this file by its path)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

# Called once at the end in wrk's main thread: one line the driver parses.
DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

_THREAD_SEED = r"""
local thread_count = 0
setup = function(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end
"""

_SEED = "  math.randomseed(os.time() * 100 + (thread_id or 0))\n"

# A mix: each entry is added in init() (wrk.headers then holds the Host header with its
# port), requests without an id are formatted once; request() draws one by weight.
_MIX = r"""
local entries = {}
local total = 0
local function add(weight, method, before, id_max, after, headers, body)
  local merged = {}
  for name, value in pairs(wrk.headers) do merged[name] = value end
  for name, value in pairs(headers) do merged[name] = value end
  total = total + weight
  local entry = {upto = total}
  if id_max > 0 then
    entry.build = function()
      return wrk.format(method, before .. math.random(1, id_max) .. after, merged, body)
    end
  else
    local ready = wrk.format(method, before, merged, body)
    entry.build = function() return ready end
  end
  entries[#entries + 1] = entry
end

request = function()
  local drawn = math.random(1, total)
  for i = 1, #entries do
    if drawn <= entries[i].upto then return entries[i].build() end
  end
end
"""


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


@dataclass(frozen=True)
class Request:
    """What wrk sends. ``path`` may contain ``{id}``, replaced per request by a random
    integer in ``[1, id_max]``. ``weight``: its share of a mix (see :func:`lua_script`)."""

    path: str
    method: str = "GET"
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    id_max: int = 0
    weight: int = 1

    def split_path(self) -> tuple[str, str]:
        """The path before and after ``{id}`` (after is empty without one)."""
        before, _, after = self.path.partition("{id}")
        return before, after


def lua_script(requests: Sequence[Request], pause_ms: int = 0) -> str:
    """The script sending ``requests``: one static request as wrk's own (no Lua per
    request), else a draw per request, each with probability weight / sum of weights.
    ``pause_ms``: each connection waits that long before each request (a light probe
    rather than a load; wrk times the request from its sending)."""
    if not requests:
        raise ValueError("no request to send")
    if any(request.weight < 1 for request in requests):
        raise ValueError("weights must be positive integers")
    if pause_ms < 0:
        raise ValueError("pause_ms must not be negative")
    if len(requests) == 1 and "{id}" not in requests[0].path:
        script = _static(requests[0])
    else:
        script = _mix(requests)
    if pause_ms:
        script += f"delay = function() return {pause_ms} end\n"
    return script + DONE


def _lua_table(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in pairs) + "}"


def _static(request: Request) -> str:
    lines = [f"wrk.method = {lua_string(request.method)}"]
    for name, value in request.headers:
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    if request.body is not None:
        lines.append(f"wrk.body = {lua_string(request.body)}")
    lines.append(f"wrk.path = {lua_string(request.path)}")
    return "\n".join(lines) + "\n"


def _mix(requests: Sequence[Request]) -> str:
    adds = []
    for request in requests:
        before, after = request.split_path()
        id_max = request.id_max if "{id}" in request.path else 0
        if "{id}" in request.path and id_max < 1:
            raise ValueError(f"{request.path}: a path with {{id}} needs id_max >= 1")
        body = lua_string(request.body) if request.body is not None else "nil"
        adds.append(
            f"  add({request.weight}, {lua_string(request.method)}, {lua_string(before)}, "
            f"{id_max}, {lua_string(after)}, {_lua_table(request.headers)}, {body})\n"
        )
    return _THREAD_SEED + _MIX + "init = function(args)\n" + _SEED + "".join(adds) + "end\n"
