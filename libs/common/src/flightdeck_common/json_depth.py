"""How deeply a JSON document nests, measured on its bytes before anyone parses it.

Python's ``json`` recurses once per level: a body of 100,000 ``[`` makes it raise
``RecursionError``, and documents just under that depth are slow to validate and can fail
later, when a response serializes them. Bodies are therefore measured first: arrays and
objects outside strings are counted, with byte-level operations (no per-character Python
loop), so a 1 MiB body costs milliseconds.
"""

from __future__ import annotations

import itertools
import operator

# Everything but the brackets is deleted; objects and arrays count alike.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
# For the running depth: an opening bracket adds 2, a closing one 0, and the position
# (1, 2, 3, ...) is subtracted, so each prefix sum minus its length is the depth there.
_STEPS = bytes.maketrans(b"[]", b"\x02\x00")
# Passes that strip innermost pairs before the exact count (shallow documents end here).
_QUICK_PASSES = 8


def _outside_strings(document: bytes) -> bytes:
    """``document`` without its string literals (brackets in strings do not nest)."""
    if b'"' not in document:
        return document
    if b"\\" in document:
        # An escaped backslash first, so that `"\\"` still ends its string.
        document = document.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(document.split(b'"')[::2])


def json_depth_exceeds(document: bytes, max_depth: int) -> bool:
    """Whether the JSON ``document`` nests arrays/objects deeper than ``max_depth``.

    ``[]`` and ``{"a": 1}`` have depth 1, ``[[1]]`` depth 2. For malformed JSON the answer
    is about the brackets it has (a truncated ``[[[`` counts 3); parsing rejects the rest.
    """
    if document.count(b"[") + document.count(b"{") <= max_depth:
        return False  # cannot nest deeper than it has brackets
    brackets = _outside_strings(document).translate(_ONE_KIND, _NOT_BRACKETS)
    # Each pass removes the innermost level of every branch: a document that is gone after
    # k passes nested exactly k deep; what is left nests (its depth) + k deep.
    levels_removed = 0
    for _ in range(_QUICK_PASSES):
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
        levels_removed += 1
    if levels_removed + brackets.count(b"[") <= max_depth:
        return False
    if b"[" * (max_depth + 1 - levels_removed) in brackets:
        return True  # a run of opening brackets deep enough by itself
    steps = brackets.translate(_STEPS)
    deepest = max(map(operator.sub, itertools.accumulate(steps), itertools.count(1)), default=0)
    return levels_removed + deepest > max_depth
