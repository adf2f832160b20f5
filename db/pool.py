"""A Postgres backend for `databases` whose pool waits a bounded time for a connection.

`databases` acquires from asyncpg's pool with no timeout, so a request beyond the pool would
wait forever. Here it waits `acquire_timeout` seconds, then fails with SERVICE_UNAVAILABLE.
"""

from __future__ import annotations

from typing import Any

from databases import Database
from databases.backends.postgres import PostgresBackend, PostgresConnection

from errors import ServiceUnavailable


class BoundedWaitConnection(PostgresConnection):
    _database: BoundedWaitBackend

    async def acquire(self) -> None:
        assert self._connection is None, "Connection is already acquired"
        assert self._database._pool is not None, "DatabaseBackend is not running"
        try:
            self._connection = await self._database._pool.acquire(timeout=self._database.acquire_timeout)
        except TimeoutError:
            raise ServiceUnavailable("The server is busy; try again shortly.") from None


class BoundedWaitBackend(PostgresBackend):
    def __init__(self, database_url: Any, *, acquire_timeout: float = 5.0, **options: Any) -> None:
        super().__init__(database_url, **options)
        self.acquire_timeout = acquire_timeout

    def connection(self) -> BoundedWaitConnection:
        return BoundedWaitConnection(self, self._dialect)


class ChatDatabase(Database):
    SUPPORTED_BACKENDS = {
        **Database.SUPPORTED_BACKENDS,
        "postgresql": "db.pool:BoundedWaitBackend",
        "postgres": "db.pool:BoundedWaitBackend",
    }
