"""Redis clients as this service needs them: retries with backoff, health checks, TLS that works
with Heroku Redis's self-signed certificates, and a bounded pool: a plan allows a few dozen
connections for every worker of every dyno, and redis-py's default pool opens one more for each
command issued while the others are busy (50 requests at once on one worker held 53), and keeps
them all. Past the bound a command waits for a connection, as a query waits for the database."""

from typing import Any

from redis import asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry


def create_redis(
    url: str, ssl_cert_reqs: str = "none", max_connections: int = 10, acquire_timeout: float = 5.0
) -> aioredis.Redis:
    """A client (no connection yet: it connects on first use) of at most `max_connections`, the
    pub/sub connection among them; a command that finds them all busy waits up to
    `acquire_timeout` seconds, then fails as a lost connection does."""
    options: dict[str, Any] = {}
    if url.startswith("rediss://") and "ssl_cert_reqs=" not in url:
        options["ssl_cert_reqs"] = ssl_cert_reqs
    pool = aioredis.BlockingConnectionPool.from_url(
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
    return aioredis.Redis.from_pool(pool)
