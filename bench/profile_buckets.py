"""Where a service's CPU goes: py-spy samples grouped by the library at the leaf of each stack.

Record a service under load, then group::

    wrk -t2 -c16 -d12s -H "Authorization: Bearer $TOKEN" 'http://127.0.0.1:8102/pipelines?limit=50' &
    py-spy record -p <pid> -d 9 -r 200 --gil -f raw -o list.raw
    python -m bench.profile_buckets list.raw

Each sample of the main thread counts for the first group (walking from the leaf frame up)
whose file matches; an ``await`` chain is attributed to the code doing the work, not to the
middleware that awaits it. Standard library only.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PostgreSQL driver + SQLAlchemy", ("sqlalchemy/", "asyncpg/", "greenlet")),
    ("pydantic validation + JSON", ("pydantic", "json/", "encoder.py", "decoder.py")),
    ("auth: JWT verify", ("jwt/", "verifier.py", "cryptography")),
    ("Redis client", ("redis/",)),
    ("logging", ("logging/", "access_log.py")),
    ("Prometheus metrics", ("prometheus",)),
    ("our middleware", ("flightdeck_common/middleware",)),
    ("starlette/fastapi routing + dependencies", ("starlette/", "fastapi/")),
    ("our handlers and repositories", ("flightdeck_",)),
    ("uvicorn/httptools/asyncio loop", ("uvicorn/", "httptools", "asyncio/", "selectors.py")),
)


def group_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, keys in GROUPS:
            if any(key in frame for key in keys):
                return name
    return "other"


def groups(raw: str) -> tuple[Counter[str], int]:
    """Samples per group of py-spy's ``raw`` (collapsed) output, main thread only."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if not number.isdigit() or not any("Runner.run" in f for f in frames):
            continue  # other threads (idle workers of the thread pool)
        counts[group_of(frames)] += int(number)
    return counts, sum(counts.values())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    counts, total = groups(Path(argv[0]).read_text())
    if not total:
        print("no samples of the event loop's thread", file=sys.stderr)
        return 1
    for name, count in counts.most_common():
        print(f"{100 * count / total:5.1f} %  {name}")
    print(f"({total} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
