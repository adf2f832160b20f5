"""Redis clients as this service needs them: retries with backoff, health checks, and TLS that
works with Heroku Redis's self-signed certificates."""

from typing import Any

from redis import asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry


def create_redis(url: str, ssl_cert_reqs: str = "none") -> aioredis.Redis:
    """A client (no connection yet: it connects on first use)."""
    options: dict[str, Any] = {}
    if url.startswith("rediss://") and "ssl_cert_reqs=" not in url:
        options["ssl_cert_reqs"] = ssl_cert_reqs
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
        socket_keepalive=True,
        socket_connect_timeout=5,
        **options,
    )
