"""asyncpg's pool, taken and given back within the querying task.

With a few connections per worker and many requests each needing one, throughput is how long a
connection stays out of the pool. asyncpg's `acquire(timeout=)` takes it in a task of its own and
`release` gives it back in another (a shielded one): each a turn of the event loop more, on a
busy worker the longest part of a short query's hold. db.pool bounds the wait with
`asyncio.timeout` around a plain `acquire()` (public API); here a connection that needs nothing
done to go back (no transaction, no reset query, not being cancelled or retired) goes back at
once. Any other goes through asyncpg's own `release`.

This is the one module reaching into asyncpg's pool (its connection holders and proxies);
tests/test_library_reaches.py fails loudly when asyncpg changes under it.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

WRITTEN_AGAINST = "0.32.0"


async def release(pool: asyncpg.Pool, proxy: PoolConnectionProxy) -> None:
    if not _releases_at_once(pool, proxy):
        await pool.release(proxy)
        return
    proxy._con._on_release()
    await proxy._holder.release(None)  # nothing in it awaits I/O here: it cannot be interrupted


def _releases_at_once(pool: asyncpg.Pool, proxy: Any) -> bool:
    """Whether asyncpg's release of this connection would only put it back (no query, no close)."""
    connection = proxy._con
    if connection is None or connection.is_closed():
        return False
    holder = proxy._holder
    protocol = connection._protocol
    return (
        holder._pool is pool
        and not pool._closing
        and not pool._closed
        and pool._reset is None
        and not connection.get_reset_query()
        and not protocol.is_in_transaction()
        and connection._top_xact is None
        and not protocol._is_cancelling()
        and protocol.queries_count < holder._max_queries
        and holder._generation == pool._generation
    )
