"""Reading a delivery's body as JSON, bounded in depth before it is parsed."""

from __future__ import annotations

import json
from typing import Any

from flightdeck_common.errors import JsonTooDeep
from flightdeck_common.json_depth import json_depth_exceeds


def parse_body(body: bytes, max_depth: int) -> dict[str, Any]:
    """The JSON object of a delivery: JsonTooDeep when it nests deeper than ``max_depth``,
    ValueError when it is not a JSON object."""
    if json_depth_exceeds(body, max_depth):
        raise JsonTooDeep(f"The payload nests arrays and objects deeper than {max_depth}.")
    try:
        payload = json.loads(body)
    except RecursionError as exc:  # not reached after the depth check; never a 500
        raise ValueError("the payload is nested too deeply") from exc
    if not isinstance(payload, dict):
        raise ValueError("the payload is not a JSON object")
    return payload
