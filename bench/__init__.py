"""Flightdeck load and scale benchmarks (issue 8): not tests, run with ``python -m bench``.

Seeds PostgreSQL straight with SQL, starts the stack in full mode (devstack), drives load
with wrk (and an async generator for signed webhooks) through the ingress, and compares
every scenario with a bare ASGI + asyncpg reference running the same SQL.
"""
