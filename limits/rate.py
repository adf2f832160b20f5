"""Fixed-window rate limits, shared by every worker and dyno through Redis (in memory without).

If Redis is unreachable, or does not answer within REDIS_COMMAND_TIMEOUT (a paused server, a
network that stops forwarding), the limiter falls back to this process's memory rather than
refusing or holding everyone: a rate limit must not become an outage. The limit then holds per
process; after a failure Redis is not asked again for a short back-off (redis_client.RedisBreaker),
so a burst falls back at once instead of each request waiting out the timeout.
"""

from __future__ import annotations

import logging
import math
import time

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import CodedError
from core.redis_clients import RedisBreaker, RedisUnavailable
from core.settings import Rate
from telemetry import record

logger = logging.getLogger("chat.ratelimit")


MEMORY_ENTRIES = 10_000
PRUNE_SECONDS = 1.0


class RateLimited(CodedError):
    code = "RATE_LIMITED"


class RateLimiter:
    def __init__(self, redis: aioredis.Redis | None, prefix: str, breaker: RedisBreaker | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._breaker = breaker
        # name -> (hits, when its window ends): each limit's entries expire on their own clock.
        self._memory: dict[str, tuple[int, float]] = {}
        self._pruned_at = 0.0

    async def check(self, bucket: str, key: str, rate: Rate) -> None:
        """Count one hit; raise RATE_LIMITED (with `retryAfter` seconds) past the rate."""
        now = time.time()
        count, ends = await self.spend(f"rate:{bucket}:{key}", 1, rate.seconds, now)
        if count > rate.count:
            retry_after = max(1, math.ceil(ends - now))
            record.refused(bucket)
            raise RateLimited(f"Too many requests; retry in {retry_after} s.", retryAfter=retry_after)

    async def spend(self, name: str, amount: int, seconds: float, now: float) -> tuple[int, float]:
        """Add `amount` to `name`'s fixed window of `seconds` holding `now`: the window's total
        so far, and when it ends (epoch seconds). Windows are aligned on the epoch, so every
        process counts in the same one."""
        window = int(now // seconds)
        ends = (window + 1) * seconds
        key = f"{self._prefix}{name}:{window}"
        if self._redis is not None:
            try:
                if self._breaker is None:
                    return await self._count_in_redis(key, amount, math.ceil(seconds) + 1), ends
                return await self._breaker.call(lambda: self._count_in_redis(key, amount, math.ceil(seconds) + 1)), ends
            except RedisUnavailable:
                pass  # the breaker logs, once per back-off
            except (RedisError, OSError) as error:
                logger.warning("Rate limiting in memory: Redis failed (%s)", type(error).__name__)
        return self._count_in_memory(key, amount, ends), ends

    async def _count_in_redis(self, key: str, amount: int, ttl: int) -> int:
        assert self._redis is not None
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            pipe.expire(key, ttl)
            count, _ = await pipe.execute()
        return int(count)

    def _count_in_memory(self, key: str, amount: int, ends: float) -> int:
        now = time.time()
        if len(self._memory) > MEMORY_ENTRIES and now - self._pruned_at >= PRUNE_SECONDS:
            # Only windows that have ended: a live counter of any limit (sign-in's included)
            # must survive however many keys another limit adds. At most once a second, so a
            # table of live entries is not rescanned on every hit.
            self._pruned_at = now
            self._memory = {name: entry for name, entry in self._memory.items() if entry[1] > now}
        count = self._memory.get(key, (0, ends))[0] + amount
        self._memory[key] = (count, ends)
        return count
