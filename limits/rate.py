"""Fixed-window rate limits, shared by every worker and dyno through Redis (in memory without).

If Redis is unreachable the limiter falls back to this process's memory rather than refusing
everyone: a rate limit must not become an outage.
"""

from __future__ import annotations

import logging
import math
import time

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import CodedError
from core.settings import Rate

logger = logging.getLogger("chat.ratelimit")


MEMORY_ENTRIES = 10_000
PRUNE_SECONDS = 1.0


class RateLimited(CodedError):
    code = "RATE_LIMITED"


class RateLimiter:
    def __init__(self, redis: aioredis.Redis | None, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        # name -> (hits, when its window ends): each limit's entries expire on their own clock.
        self._memory: dict[str, tuple[int, float]] = {}
        self._pruned_at = 0.0

    async def check(self, bucket: str, key: str, rate: Rate) -> None:
        """Count one hit; raise RATE_LIMITED (with `retryAfter` seconds) past the rate."""
        now = time.time()
        window = int(now // rate.seconds)
        name = f"{self._prefix}rate:{bucket}:{key}:{window}"
        count = await self._count(name, math.ceil(rate.seconds) + 1, (window + 1) * rate.seconds)
        if count > rate.count:
            retry_after = max(1, math.ceil((window + 1) * rate.seconds - now))
            raise RateLimited(f"Too many requests; retry in {retry_after} s.", retryAfter=retry_after)

    async def _count(self, name: str, ttl: int, ends: float) -> int:
        if self._redis is not None:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incr(name)
                    pipe.expire(name, ttl)
                    count, _ = await pipe.execute()
                return int(count)
            except RedisError as error:
                logger.warning("Rate limiting in memory: Redis failed (%s)", type(error).__name__)
        return self._count_in_memory(name, ends)

    def _count_in_memory(self, name: str, ends: float) -> int:
        now = time.time()
        if len(self._memory) > MEMORY_ENTRIES and now - self._pruned_at >= PRUNE_SECONDS:
            # Only windows that have ended: a live counter of any limit (sign-in's included)
            # must survive however many keys another limit adds. At most once a second, so a
            # table of live entries is not rescanned on every hit.
            self._pruned_at = now
            self._memory = {key: entry for key, entry in self._memory.items() if entry[1] > now}
        count = self._memory.get(name, (0, ends))[0] + 1
        self._memory[name] = (count, ends)
        return count
