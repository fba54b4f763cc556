"""Counting computations for the metrics cache tests: each call answers the next number."""

from __future__ import annotations

from pydantic import BaseModel


class Answer(BaseModel):
    value: int


def cached_body(value: int) -> bytes:
    """The response body the cache keeps for ``Answer(value=value)``."""
    return b'{"value":%d}' % value


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> Answer:
        self.calls += 1
        return Answer(value=self.calls)
