"""Log-scale buckets of run durations: the histogram behind the stats percentiles.

- bucket 0: under 1 ms (in practice 0 s);
- bucket k (1 ≤ k < OVERFLOW_BUCKET): ``[BOUNDS[k], BOUNDS[k + 1])`` with
  ``BOUNDS[k] = 0.001 s * RATIO^(k-1)`` (9 significant digits), so every finite bucket
  spans a factor of at most ``RATIO`` (1.05);
- ``OVERFLOW_BUCKET``: ``BOUNDS[OVERFLOW_BUCKET]`` (≈ 40 days) and above.

A value estimated anywhere inside its finite bucket is within ``RATIO - 1`` (5 %) of the
true value, relative to it; see ``metrics/README.md`` for the percentile bound.

The bucket is computed in Python when a run is written (:func:`duration_bucket`) and in
SQL by the migration and the benchmark seeder (:func:`duration_bucket_sql`, the same
bounds as literals): all compare the same IEEE doubles, so they always agree.
"""

from __future__ import annotations

from bisect import bisect_right

RATIO = 1.05
SMALLEST_BOUND = 0.001  # seconds: the lower bound of bucket 1
LARGEST_BOUND = 40 * 86_400.0  # seconds: the overflow bucket starts at or after this


def _bounds() -> tuple[float, ...]:
    # BOUNDS[0] = 0.0 (bucket 0), then the geometric series up to the overflow bucket.
    bounds = [0.0]
    k = 0
    while True:
        bound = float(f"{SMALLEST_BOUND * RATIO**k:.9g}")
        bounds.append(bound)
        if bound >= LARGEST_BOUND:
            return tuple(bounds)
        k += 1


BOUNDS: tuple[float, ...] = _bounds()
OVERFLOW_BUCKET = len(BOUNDS) - 1


def duration_bucket(seconds: float) -> int:
    """The bucket of a duration (negative durations count as 0 s)."""
    if seconds < SMALLEST_BOUND:
        return 0
    return bisect_right(BOUNDS, seconds) - 1


def bucket_range(bucket: int) -> tuple[float, float]:
    """``[lower, upper)`` of a bucket; the overflow bucket is ``[lower, lower]`` (no upper
    bound is known: its values are estimated at its lower bound)."""
    if bucket >= OVERFLOW_BUCKET:
        return BOUNDS[OVERFLOW_BUCKET], BOUNDS[OVERFLOW_BUCKET]
    if bucket == 0:
        return 0.0, 0.0  # under a millisecond: estimated as 0 s
    return BOUNDS[bucket], BOUNDS[bucket + 1]


def duration_bucket_sql(column: str, dialect: str = "sqlite") -> str:
    """SQL computing :func:`duration_bucket` of ``column`` (NULL stays NULL).

    PostgreSQL: ``width_bucket(column, ARRAY[bounds])`` (a binary search over the lower
    bounds of buckets 1..overflow: 0 below the first, as here). Elsewhere (SQLite): a
    balanced tree of ``CASE`` comparisons, about 9 per row, no ``ln()`` needed (SQLite
    builds may lack it). The bounds are written as literals (``repr`` of the same doubles).
    """
    if dialect == "postgresql":
        bounds = ", ".join(repr(bound) for bound in BOUNDS[1:])
        return f"width_bucket({column}, ARRAY[{bounds}]::float8[])"

    def tree(low: int, high: int) -> str:
        # Buckets low..high (inclusive); the value is known to be >= BOUNDS[low].
        if low == high:
            return str(low)
        middle = (low + high + 1) // 2
        return (
            f"CASE WHEN {column} < {BOUNDS[middle]!r} "
            f"THEN {tree(low, middle - 1)} ELSE {tree(middle, high)} END"
        )

    return f"CASE WHEN {column} IS NULL THEN NULL ELSE {tree(0, OVERFLOW_BUCKET)} END"
