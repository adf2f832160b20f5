"""A Postgres backend for `databases`, tuned for many small queries.

- The pool waits a bounded time for a connection: `databases` acquires with no timeout, so a
  request beyond the pool would wait forever; here it gets SERVICE_UNAVAILABLE instead.
- A database outage (see outages.py) becomes SERVICE_UNAVAILABLE here, where every query
  passes: resolvers, the request context and batched loaders all raise an error clients are
  meant to see, and a worker that starts during an outage still starts.
- Compiled statements are cached by SQLAlchemy's own cache key, with the column maps of their
  rows: `databases` compiles every statement and maps its columns on every call, which cost more
  than the query itself on the hot paths. A statement with an IN list is kept unexpanded and
  expanded per call: every batched read and access check has one.
- Releasing a connection skips asyncpg's reset query (advisory locks, LISTEN, cursors, SET):
  we use none of them, and it was a second round trip per query. Open transactions are still
  rolled back by asyncpg.
- A connection is taken in the querying task (`asyncio.timeout` around asyncpg's `acquire()`,
  not `acquire(timeout=)`, which takes it in a task of its own) and given back by asyncpg's
  `release`. A single read outside a transaction (`fetch_rows`) takes one straight from the
  pool, without the per-task `Connection` `databases` builds for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, cast

import asyncpg
import sqlalchemy as sa
from databases import Database
from databases.backends.common.records import Record as DatabasesRecord
from databases.backends.common.records import create_column_maps
from databases.backends.postgres import PostgresBackend, PostgresConnection, PostgresTransaction
from databases.interfaces import Record, TransactionBackend
from sqlalchemy.sql import ClauseElement, visitors
from sqlalchemy.sql.ddl import DDLElement
from sqlalchemy.sql.elements import BindParameter, TextClause

from core.errors import ServiceUnavailable, as_service_unavailable
from core.outages import QuietPoolRetries, is_database_unavailable, outages
from core.reaches import written_against
from db.records import ReadOnlyRow, Row, RowView, as_rows
from telemetry import record

# The one module reaching into `databases` (its backend and connection classes) and into the
# compiled statements of SQLAlchemy; tests/test_library_reaches.py fails loudly when either changes.
WRITTEN_AGAINST = {"databases": written_against("databases"), "sqlalchemy": written_against("SQLAlchemy")}
CACHE_SIZE = 512
ColumnMaps = tuple[Mapping[Any, Any], Mapping[Any, Any], Mapping[Any, Any]]
# By cache key: the compiled statement, its SQL and parameters' order (None: expanded per call), its maps.
_compiled: dict[Any, tuple[Any, str | None, list[str] | None, ColumnMaps]] = {}
# By id, the statement kept in it; its SQL and parameters' order (None: expanded per call).
_statics: dict[int, tuple[ClauseElement, Any, str | None, list[str] | None, ColumnMaps]] = {}
# A kept statement whose only per-call SQL is a value written into it (`literal_execute`, no IN
# list): its SQL and parameters' order for each such value, by the statement and the values.
_literals: dict[tuple[ClauseElement, tuple[Any, ...]], tuple[str, list[str]]] = {}


class NoResetQueryConnection(asyncpg.Connection):
    def get_reset_query(self) -> str:
        return ""


class BoundedWaitConnection(PostgresConnection):
    _database: BoundedWaitBackend

    async def acquire(self) -> None:
        assert self._connection is None, "Connection is already acquired"
        assert self._database._pool is not None, "DatabaseBackend is not running"
        self._connection = await _acquired(self._database._pool, self._database.acquire_timeout)

    async def release(self) -> None:
        assert self._connection is not None, "Connection is not acquired"
        assert self._database._pool is not None, "DatabaseBackend is not running"
        connection, self._connection = self._connection, None
        await _released(self._database._pool, connection)

    async def fetch_all(self, query: ClauseElement) -> list[Record]:
        rows, columns, maps = await self._fetched(query)
        dialect = self._dialect
        return [DatabasesRecord(row, columns, dialect, maps) for row in rows]

    async def fetch_one(self, query: ClauseElement) -> Record | None:
        assert self._connection is not None, "Connection is not acquired"
        sql, args, columns, maps = self._compiled_with_maps(query)
        try:
            row = await self._connection.fetchrow(sql, *args)
        except Exception as error:
            raise _translated(error)  # noqa: B904
        outages.answered()
        return None if row is None else DatabasesRecord(row, columns, self._dialect, maps)

    async def execute(self, query: ClauseElement) -> Any:
        try:
            result = await super().execute(query)
        except Exception as error:
            raise _translated(error)  # noqa: B904
        outages.answered()
        return result

    async def execute_many(self, queries: list[ClauseElement]) -> None:
        try:
            await super().execute_many(queries)
        except Exception as error:
            raise _translated(error)  # noqa: B904
        outages.answered()

    async def fetch_records(
        self, query: ClauseElement, values: Mapping[str, Any] | None, record_class: type[asyncpg.Record] | None
    ) -> list[asyncpg.Record]:
        """asyncpg's rows: str keys, timestamps with their zone."""
        rows, _columns, _maps = await self._fetched(query, values, record_class)
        return rows

    async def _fetched(
        self,
        query: ClauseElement,
        values: Mapping[str, Any] | None = None,
        record_class: type[asyncpg.Record] | None = None,
    ) -> tuple[list[asyncpg.Record], tuple, ColumnMaps]:
        """asyncpg's rows for the query, with its result columns and their maps."""
        assert self._connection is not None, "Connection is not acquired"
        sql, args, columns, maps = self._compiled_with_maps(query) if values is None else self._static(query, values)
        try:
            rows = await self._connection.fetch(sql, *args, record_class=record_class)
        except Exception as error:
            raise _translated(error)  # noqa: B904
        outages.answered()
        return rows, columns, maps

    def transaction(self) -> TransactionBackend:
        return OutageAwareTransaction(connection=self)

    def _compile(self, query: ClauseElement) -> tuple[str, list, tuple]:
        return self._compiled_with_maps(query)[:3]

    def _static(self, statement: ClauseElement, values: Mapping[str, Any]) -> tuple[str, list, tuple, ColumnMaps]:
        """A statement kept for good (its parameters named, their values given per call): compiled
        once, neither copied with the values nor keyed again. An expanding parameter (`IN` a list
        given per call) is expanded per call, as `_compiled_with_maps` expands a keyed one; so is
        one rendered in the SQL (`literal_execute`, a LIMIT: see db.rooms.rooms_of_user)."""
        entry = _statics.get(id(statement))
        if entry is None or entry[0] is not statement:
            made: Any = statement.compile(dialect=self._dialect)
            if made.literal_execute_params or any(bind.expanding for bind in made.binds.values()):
                text, order = None, None
            else:
                made = statement.compile(dialect=self._dialect, compile_kwargs={"render_postcompile": True})
                order = sorted(made.params)
                text = _positional(made.string, order)
            maps = create_column_maps(made._result_columns)
            entry = _statics[id(statement)] = (statement, made, text, order, maps)
        compiled: Any
        _statement, compiled, sql, names, maps = entry
        if sql is None or names is None:
            written = compiled.literal_execute_params
            if not written or compiled.post_compile_params:
                return (*_expanded(compiled, compiled.construct_params(params=values)), compiled._result_columns, maps)
            # Only values written into the SQL (a LIMIT): its text made once for each of them.
            key = (statement, tuple(values[bind.key] for bind in written))
            found = _literals.get(key)
            if found is None:
                if len(_literals) >= CACHE_SIZE:
                    _literals.clear()
                expanded = compiled.construct_expanded_state(compiled.construct_params(params=values))
                order = sorted(expanded.parameters)
                found = _literals[key] = (_positional(expanded.statement, order), order)
            sql, names = found
        return sql, _bound(values, names, compiled._bind_processors), compiled._result_columns, maps

    def _compiled_with_maps(self, query: ClauseElement) -> tuple[str, list, tuple, ColumnMaps]:
        key = None if isinstance(query, DDLElement) else query._generate_cache_key()
        if key is None:
            sql, args, columns = super()._compile(query)
            return sql, args, columns, create_column_maps(columns)
        entry = _compiled.get(key.key)
        if entry is None:
            # An IN list's length is known per call: such a statement is kept with its list
            # unexpanded, and expanded for each call's values (SQLAlchemy's post-compile step).
            expanding = any(parameter.expanding for parameter in key.bindparams)
            compiled = query.compile(
                dialect=self._dialect, cache_key=key, compile_kwargs={"render_postcompile": not expanding}
            )
            order = None if expanding else sorted(compiled.params)
            text = None if order is None else _positional(compiled.string, order)
            if len(_compiled) >= CACHE_SIZE:
                _compiled.clear()
            maps = create_column_maps(compiled._result_columns)
            entry = _compiled[key.key] = (compiled, text, order, maps)
        cached: Any
        cached, text, order, maps = entry
        values = cached.construct_params(extracted_parameters=key.bindparams)
        if text is None or order is None:
            return (*_expanded(cached, values), cached._result_columns, maps)
        return text, _bound(values, order, cached._bind_processors), cached._result_columns, maps


def _expanded(compiled: Any, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The SQL and parameters of a statement compiled with its IN lists unexpanded, for these
    values (SQLAlchemy's post-compile step)."""
    expanded = compiled.construct_expanded_state(values)
    names = sorted(expanded.parameters)
    return _positional(expanded.statement, names), _bound(expanded.parameters, names, expanded.processors)


def _bound(values: Mapping[str, Any], names: list[str], processors: Mapping[str, Any]) -> list[Any]:
    """The parameters' values in `names`' order, each through its type's bind processor if any."""
    return [processors[name](values[name]) if name in processors else values[name] for name in names]


def _positional(statement: str, names: list[str]) -> str:
    """asyncpg's $1, $2... for the named parameters, numbered in `names`' order (as `databases` does)."""
    return statement % {name: f"${position}" for position, name in enumerate(names, start=1)}


class OutageAwareTransaction(PostgresTransaction):
    """BEGIN, COMMIT and ROLLBACK go to asyncpg directly, past the connection's methods."""

    async def start(self, is_root: bool, extra_options: dict[Any, Any]) -> None:
        try:
            await super().start(is_root, extra_options)
        except Exception as error:
            raise _translated(error)  # noqa: B904

    async def commit(self) -> None:
        try:
            await super().commit()
        except Exception as error:
            raise _translated(error)  # noqa: B904

    async def rollback(self) -> None:
        try:
            await super().rollback()
        except Exception as error:
            raise _translated(error)  # noqa: B904


async def fetch_rows(db: Database, query: ClauseElement, values: Mapping[str, Any] | None = None) -> list[Row]:
    """A query's rows as plain dicts, on the connection (and in the transaction) `db.fetch_all`
    would use. On Postgres without the Record `databases` wraps each row in, which we only
    unwrapped again: that was a fifth of a 100-row query's cost. And where the task holds no
    connection yet (no transaction open), straight on a pooled one: the same connection
    `databases` would acquire and release around this one query, without the per-task
    `Connection` (three locks and a backend connection) it builds for it. With `values`, the
    query is a statement kept for good, as for `fetch_views` (building and keying a batched
    read's statement for each batch cost more than its query)."""
    return await _fetched_rows(db, query, values, views=False)


async def fetch_views(db: Database, statement: ClauseElement, values: Mapping[str, Any]) -> list[RowView]:
    """The rows of a statement kept for good, its named parameters taking `values`, read as
    `fetch_rows` reads them, for a list that is only read. On Postgres the statement is
    compiled once (a hot query's statement copied with its values and keyed again on every call
    cost more than the rest of its Python), and its rows stay as asyncpg made them
    (`ReadOnlyRow`), without a dict made of each (a third of a 100-row list's Python)."""
    return await _fetched_rows(db, statement, values, views=True)


async def _fetched_rows(db: Database, query: ClauseElement, values: Mapping[str, Any] | None, views: bool) -> list[Any]:
    backend = db._backend
    record_class = ReadOnlyRow if views else None
    if (
        isinstance(backend, BoundedWaitBackend)
        and db._global_connection is None
        and db._connection_map.get(asyncio.current_task()) is None  # type: ignore[arg-type]
    ):
        return _shaped(await backend.fetch_records(query, values, record_class), views)
    async with db.connection() as connection:
        task_connection = connection._connection
        async with connection._query_lock:
            if isinstance(task_connection, BoundedWaitConnection):
                return _shaped(await task_connection.fetch_records(query, values, record_class), views)
            bound = query if values is None else _with_values(query, values)
            return as_rows(await task_connection.fetch_all(bound))


def _with_values(query: ClauseElement, values: Mapping[str, Any]) -> ClauseElement:
    """A kept statement with its named parameters bound to `values`, for `databases` to compile
    (on SQLite). Not `.params()`: SQLAlchemy 2.1 keeps those values apart from the statement, and
    `databases` compiles with postcompile rendering, which then refuses to read them."""
    if isinstance(query, TextClause):
        return query.bindparams(**values)

    def bound(element: Any, **_: Any) -> Any:
        if isinstance(element, BindParameter) and element.key in values:
            return sa.bindparam(element.key, values[element.key], type_=element.type, expanding=element.expanding)
        return None

    return cast(ClauseElement, visitors.replacement_traverse(cast(Any, query), {}, bound))


def _shaped(records: list[asyncpg.Record], views: bool) -> list[Any]:
    return records if views else [dict(row.items()) for row in records]


async def _acquired(pool: asyncpg.Pool, seconds: float) -> Any:
    """A pooled connection, or SERVICE_UNAVAILABLE once `seconds` pass (or the database is away).
    Not `acquire(timeout=)`: it takes the connection in a task of its own, a turn of the event
    loop more for every query."""
    started = record.clock()
    try:
        async with asyncio.timeout(seconds):
            connection = await pool.acquire()
    except TimeoutError:
        record.pool_timed_out(record.POSTGRES)
        raise ServiceUnavailable("The server is busy; try again shortly.") from None
    except Exception as error:
        raise _translated(error)  # noqa: B904 (the outage is its cause, or it is the error itself)
    record.pool_waited(record.POSTGRES, started)
    return connection


async def _released(pool: asyncpg.Pool, connection: Any) -> None:
    try:
        await pool.release(connection)
    except Exception as error:
        raise _translated(error)  # noqa: B904


def _states(pool: asyncpg.Pool) -> Callable[[], dict[str, int]]:
    """The pool's connections by state, for telemetry (asyncpg's public counts)."""

    def states() -> dict[str, int]:
        idle = pool.get_idle_size()
        return {"used": pool.get_size() - idle, "idle": idle}

    return states


def _translated(error: Exception) -> Exception:
    """SERVICE_UNAVAILABLE (caused by `error`) for an outage; any other error as it is."""
    return as_service_unavailable(error) or error


class BoundedWaitBackend(PostgresBackend):
    def __init__(self, database_url: Any, *, acquire_timeout: float = 5.0, **options: Any) -> None:
        super().__init__(database_url, connection_class=NoResetQueryConnection, **options)
        self.acquire_timeout = acquire_timeout

    async def connect(self) -> None:
        """A worker that starts while the database is away starts anyway, with an empty pool
        that connects on first use: gunicorn stops the whole server when a worker fails to boot,
        so one worker recycled during an outage would otherwise take the others down with it."""
        QuietPoolRetries.install()
        try:
            await super().connect()
        except Exception as error:
            if not is_database_unavailable(error):
                raise
            outages.refused(error)
            self._options = {**self._options, "min_size": 0}
            await super().connect()
        record.observe_pool(record.POSTGRES, _states(self._pool))

    def connection(self) -> BoundedWaitConnection:
        return BoundedWaitConnection(self, self._dialect)

    async def fetch_records(
        self, query: ClauseElement, values: Mapping[str, Any] | None, record_class: type[asyncpg.Record] | None
    ) -> list[asyncpg.Record]:
        """asyncpg's rows, on a connection acquired for this query alone."""
        connection = self.connection()
        await connection.acquire()
        try:
            return await connection.fetch_records(query, values, record_class)
        finally:
            await connection.release()


class ChatDatabase(Database):
    SUPPORTED_BACKENDS = {
        **Database.SUPPORTED_BACKENDS,
        "postgresql": "db.pool:BoundedWaitBackend",
        "postgres": "db.pool:BoundedWaitBackend",
    }
