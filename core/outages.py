"""Which failures mean "the database is not there right now", and a log that says so briefly.

An outage (Postgres stopped, restarting, crashed, failing over, out of connections) is not a bug:
clients are told SERVICE_UNAVAILABLE and retry. Everything else stays an internal error. The
classification lives here alone, for the HTTP path (db.pool, errors, transports.http) and the
WebSocket path alike; it goes by exception type, since server messages are localized.
"""

from __future__ import annotations

import errno
import logging
import socket
import time

from asyncpg import exceptions as pg

from core.reaches import written_against

# A reach (core/reaches.py): asyncpg's texts for a connection gone, and its pool's logger;
# tests/test_library_reaches.py fails loudly when asyncpg changes them.
WRITTEN_AGAINST = written_against("asyncpg")
logger = logging.getLogger("chat.database")

# 08xxx: the connection failed or is gone. ProtocolViolationError (08P01) is in that class but
# means a malformed message from us (a bug), so it is left out below.
_CONNECTION_GONE: tuple[type[BaseException], ...] = (
    pg.PostgresConnectionError,
    pg.AdminShutdownError,  # 57P01: `pg_ctl stop -m fast`, or our backend terminated
    pg.CrashShutdownError,  # 57P02: another backend crashed, the server resets every session
    pg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    pg.IdleSessionTimeoutError,  # 57P05: the server ended an idle session
    pg.TooManyConnectionsError,  # 53300: the plan's limit is taken (one-off dynos, a failover)
    # 25006: during a failover a connection can land on a server still in recovery (a hot
    # standby); its writes fail until the promotion completes.
    pg.ReadOnlySQLTransactionError,
    ConnectionError,  # refused, reset, aborted, broken pipe
    socket.gaierror,  # the database's host name does not resolve (Heroku moves it on failover)
)
_NOT_AN_OUTAGE: tuple[type[BaseException], ...] = (pg.ProtocolViolationError,)
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)
# How much of an exception's cause chain is looked at: asyncpg wraps the socket's error once,
# `databases` and our own translation add a level or two.
_CHAIN_DEPTH = 4


def is_database_unavailable(error: BaseException) -> bool:
    """True when `error` (or what caused it) means the database cannot be reached or is going
    away for now, so a retry shortly may succeed; False for anything that would fail again."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < _CHAIN_DEPTH:
        if _is_outage(current):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _is_outage(error: BaseException) -> bool:
    if isinstance(error, _NOT_AN_OUTAGE):
        return False
    if isinstance(error, _CONNECTION_GONE):
        return True
    if isinstance(error, pg.InterfaceError):
        # asyncpg has no type for "the connection closed under you": it raises InterfaceError
        # ("connection is closed", "cannot perform operation: connection is closed") for a
        # connection the server dropped; every other InterfaceError is a misuse of the API.
        return "connection is closed" in str(error)
    if type(error) is pg.InternalClientError:
        # The server's FATAL on an idle connection (shutdown, terminate) leaves asyncpg's protocol
        # waiting for a ReadyForQuery that never comes, until it reads the socket's end; a query
        # in between is refused with "cannot switch to state N; another operation (2) is in
        # progress" (or "... protocol is in the "failed" state" once the end is read).
        return str(error).startswith("cannot switch to state")
    if isinstance(error, OSError):
        if error.errno in _NETWORK_ERRNOS:
            return True
        # asyncio's create_connection, when every address of a host failed differently.
        return error.errno is None and str(error).startswith("Multiple exceptions:")
    return False


REMIND_SECONDS = 10.0


class OutageLog:
    """One warning when the database stops answering, one when it answers again, and a reminder
    with a count every REMIND_SECONDS in between: under load an outage is a handful of lines, not
    a traceback per request. Per process; the event loop is its only thread."""

    def __init__(self, remind_seconds: float = REMIND_SECONDS) -> None:
        self._remind_seconds = remind_seconds
        self.since: float | None = None
        self._refused = 0
        self._reminded_at = 0.0

    def refused(self, error: BaseException) -> None:
        """An operation failed because the database is unavailable."""
        now = time.monotonic()
        self._refused += 1
        if self.since is None:
            self.since = self._reminded_at = now
            logger.warning("The database is unavailable (%s); answering SERVICE_UNAVAILABLE", _describe(error))
        elif now - self._reminded_at >= self._remind_seconds:
            self._reminded_at = now
            logger.warning(
                "The database is still unavailable after %.0f s (%s); %d operations refused so far",
                now - self.since,
                _describe(error),
                self._refused,
            )

    def answered(self) -> None:
        """An operation succeeded: if an outage was under way, it is over."""
        if self.since is None:
            return
        logger.warning(
            "The database answers again after %.1f s; %d operations were refused",
            time.monotonic() - self.since,
            self._refused,
        )
        self.since, self._refused = None, 0


class QuietPoolRetries(logging.Filter):
    """asyncpg's pool keeps reconnecting its minimum of connections in the background, logging
    each failed try with a traceback; during an outage that is expected, so one line each."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_database_unavailable(error):
            record.msg = f"{record.getMessage()} ({_describe(error)})"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True

    @classmethod
    def install(cls) -> None:
        pool_logger = logging.getLogger("asyncpg.pool")
        if not any(isinstance(existing, cls) for existing in pool_logger.filters):
            pool_logger.addFilter(cls())


def _describe(error: BaseException) -> str:
    """The exception's type and first line: no query text, no parameters."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


outages = OutageLog()
