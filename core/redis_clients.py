"""Redis clients as this service needs them: retries with backoff, health checks, TLS that works
with Heroku Redis's self-signed certificates, and a bounded pool: a plan allows a few dozen
connections for every worker of every dyno, and redis-py's default pool opens one more for each
command issued while the others are busy (50 requests at once on one worker held 53), and keeps
them all. Past the bound a command waits for a connection, as a query waits for the database.

And a breaker that bounds the calls a request waits on (see RedisBreaker)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis import asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry


class PoolObserver(Protocol):
    """Told how long each wait for a pool's connection took (telemetry)."""

    def waited(self, started: float) -> None: ...

    def timed_out(self) -> None: ...


class ObservedPool(aioredis.BlockingConnectionPool):
    """redis-py's blocking pool, its waits for a connection told to `observer` (when set)."""

    observer: PoolObserver | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        observer = self.observer
        if observer is None:
            return await super().get_connection(*args, **kwargs)
        started = time.perf_counter()
        try:
            connection = await super().get_connection(*args, **kwargs)
        except RedisConnectionError as error:
            if str(error) == NO_CONNECTION:  # the wait ran out (not Redis refusing us)
                observer.timed_out()
            raise
        observer.waited(started)
        return connection


# What BlockingConnectionPool raises when `acquire_timeout` runs out.
NO_CONNECTION = "No connection available."


def create_redis(
    url: str,
    ssl_cert_reqs: str = "none",
    max_connections: int = 10,
    acquire_timeout: float = 5.0,
    observer: PoolObserver | None = None,
) -> aioredis.Redis:
    """A client (no connection yet: it connects on first use) of at most `max_connections`, the
    pub/sub connection among them; a command that finds them all busy waits up to
    `acquire_timeout` seconds, then fails as a lost connection does. `observer`: told of each
    wait for a connection."""
    options: dict[str, Any] = {}
    if url.startswith("rediss://") and "ssl_cert_reqs=" not in url:
        options["ssl_cert_reqs"] = ssl_cert_reqs
    pool = ObservedPool.from_url(
        url,
        max_connections=max_connections,
        timeout=acquire_timeout,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
        socket_keepalive=True,
        socket_connect_timeout=5,
        **options,
    )
    pool.observer = observer
    return aioredis.Redis.from_pool(pool)


# A call on a request's path that Redis does not answer within the breaker's timeout, or that
# fails, opens the breaker for this long: calls then fall back at once, without asking Redis.
BACKOFF_SECONDS = 2.0

logger = logging.getLogger("chat.redis")

T = TypeVar("T")


class RedisUnavailable(RedisError):
    """Redis did not answer in time, failed, or failed so recently that it was not asked. A
    RedisError, so what already falls back on a RedisError falls back on it too."""


class RedisBreaker:
    """Bounds the Redis calls on a request's path (rate limits, persisted queries, typing and
    presence, live slots, publishes): a paused Redis, or a network that stops forwarding, keeps
    a connection open and answers nothing, and redis-py then waits for ever. Each call gets
    `timeout` seconds; a call that fails or times out opens the breaker for `backoff` seconds,
    during which calls raise RedisUnavailable at once (their callers fall back to this process's
    memory, or do without), so a burst does not pile up waiting out the timeout one by one. Then
    one call tries Redis while the others still fall back; its answer (or any other call's)
    closes the breaker.

    One warning when it opens, one per back-off while Redis still fails, one when it answers
    again: not one per call. Per process; the event loop is its only thread."""

    def __init__(self, timeout: float, backoff: float = BACKOFF_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.timeout = timeout
        self.backoff = backoff
        self._clock = clock
        self._down_since: float | None = None  # None: closed
        self._retry_at = 0.0
        self._probing = False
        self._skipped = 0
        self._abandoned: set[asyncio.Future[Any]] = set()

    @property
    def open(self) -> bool:
        """Calls are falling back now (Redis failed within the last back-off, or is being tried)."""
        return self._down_since is not None and (self._probing or self._clock() < self._retry_at)

    async def call(self, command: Callable[[], Awaitable[T]], *, always_try: bool = False) -> T:
        """`command()`'s result, or RedisUnavailable (from the error, or on a timeout).

        `always_try`: asked even while the breaker is open (within the timeout all the same),
        for a call whose loss costs more than a wait: a publish skipped once Redis is back would
        leave every other process's subscribers without the event until the next one. Its
        answer closes the breaker for everyone."""
        probe = False
        if self._down_since is not None and not always_try:
            if self.open:
                self._skipped += 1
                raise RedisUnavailable("Redis failed moments ago; not asked again yet")
            probe = self._probing = True
        try:
            result = await self._bounded(command)
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(error)
            raise RedisUnavailable(f"Redis failed ({_describe(error)})") from error
        finally:
            if probe:
                self._probing = False
        if self._down_since is not None:
            logger.warning(
                "Redis answers again after %.1f s; %d calls fell back meanwhile",
                self._clock() - self._down_since,
                self._skipped,
            )
            self._down_since, self._skipped = None, 0
        return result

    async def _bounded(self, command: Callable[[], Awaitable[T]]) -> T:
        """In a task of its own, so the caller returns at the timeout whatever the command does
        with its cancellation (redis-py drops the connection it was reading from)."""
        task = asyncio.ensure_future(command())
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if task not in done:
            self._abandon(task)
            raise TimeoutError(f"no answer in {self.timeout:g} s")
        return task.result()

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(_forget(self._abandoned))

    def _failed(self, error: BaseException) -> None:
        now = self._clock()
        self._retry_at = now + self.backoff
        if self._down_since is None:
            self._down_since = now
            logger.warning(
                "Redis failed (%s); rate limits count in this process's memory and other Redis calls "
                "on requests are skipped for %g s",
                _describe(error),
                self.backoff,
            )
        elif self._probing:
            logger.warning(
                "Redis still fails after %.0f s (%s); %d calls fell back so far",
                now - self._down_since,
                _describe(error),
                self._skipped,
            )


def _forget(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned call's error is not logged again

    return done


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__
