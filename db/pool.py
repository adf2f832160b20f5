"""A Postgres backend for `databases`, tuned for many small queries.

- The pool waits a bounded time for a connection: `databases` acquires with no timeout, so a
  request beyond the pool would wait forever; here it gets SERVICE_UNAVAILABLE instead.
- Compiled statements are cached by SQLAlchemy's own cache key: `databases` compiles every
  statement on every call, which cost more than the query itself on the hot paths.
- Releasing a connection skips asyncpg's reset query (advisory locks, LISTEN, cursors, SET):
  we use none of them, and it was a second round trip per query. Open transactions are still
  rolled back by asyncpg.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from databases import Database
from databases.backends.postgres import PostgresBackend, PostgresConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.ddl import DDLElement

from errors import ServiceUnavailable

CACHE_SIZE = 512
_compiled: dict[Any, tuple[Any, str, list[str]]] = {}


class NoResetQueryConnection(asyncpg.Connection):
    def get_reset_query(self) -> str:
        return ""


class BoundedWaitConnection(PostgresConnection):
    _database: BoundedWaitBackend

    async def acquire(self) -> None:
        assert self._connection is None, "Connection is already acquired"
        assert self._database._pool is not None, "DatabaseBackend is not running"
        try:
            self._connection = await self._database._pool.acquire(timeout=self._database.acquire_timeout)
        except TimeoutError:
            raise ServiceUnavailable("The server is busy; try again shortly.") from None

    def _compile(self, query: ClauseElement) -> tuple[str, list, tuple]:
        key = None if isinstance(query, DDLElement) else query._generate_cache_key()
        if key is None or any(parameter.expanding for parameter in key.bindparams):  # IN lists vary in length
            return super()._compile(query)
        entry = _compiled.get(key.key)
        if entry is None:
            compiled = query.compile(dialect=self._dialect, cache_key=key, compile_kwargs={"render_postcompile": True})
            names = sorted(compiled.params)
            sql = compiled.string % {name: f"${position}" for position, name in enumerate(names, start=1)}
            if len(_compiled) >= CACHE_SIZE:
                _compiled.clear()
            entry = _compiled[key.key] = (compiled, sql, names)
        compiled, sql, names = entry
        values = compiled.construct_params(extracted_parameters=key.bindparams)
        processors = compiled._bind_processors
        args = [processors[name](values[name]) if name in processors else values[name] for name in names]
        return sql, args, compiled._result_columns


class BoundedWaitBackend(PostgresBackend):
    def __init__(self, database_url: Any, *, acquire_timeout: float = 5.0, **options: Any) -> None:
        super().__init__(database_url, connection_class=NoResetQueryConnection, **options)
        self.acquire_timeout = acquire_timeout

    def connection(self) -> BoundedWaitConnection:
        return BoundedWaitConnection(self, self._dialect)


class ChatDatabase(Database):
    SUPPORTED_BACKENDS = {
        **Database.SUPPORTED_BACKENDS,
        "postgresql": "db.pool:BoundedWaitBackend",
        "postgres": "db.pool:BoundedWaitBackend",
    }
