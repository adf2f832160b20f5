"""A per-user budget for resumes that the live engine cannot serve from shared results.

A resume from an old cursor executes the subscriber's selection once per historical event: the
feed's last events come with the results it delivered (shared with every subscriber of the same
selection), older ones are read from the log and executed for this subscriber alone. Those
executions count against the user's budget, `count` per `seconds` in fixed windows, shared by
every worker and dyno through Redis (this process's memory without it, or while Redis fails).
Past it the resume is paced, not refused: it waits for the next window, so an honest client far
behind still gets everything, gap-free, and a loop of subscribe/unsubscribe from cursor 0 gets
no more replayed per window than the budget, however many times it starts again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from redis import asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger("chat.live")

CHUNK = 25  # executions taken from the budget at a time (one Redis round trip each)
MEMORY_ENTRIES = 10_000


class ReplayBudget:
    def __init__(self, redis: aioredis.Redis | None, prefix: str, count: int, seconds: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self.count = count
        self.seconds = seconds
        self._memory: dict[str, tuple[int, float]] = {}

    async def take(self, user: int, executions: int) -> float:
        """Count `executions` for `user`: 0 when they fit this window, else the seconds until
        the next window (when the caller tries again)."""
        now = time.time()
        window = int(now // self.seconds)
        ends = (window + 1) * self.seconds
        name = f"{self._prefix}replay:{user}:{window}"
        spent = await self._spend(name, executions, ends)
        if spent <= self.count:
            return 0.0
        return max(0.01, ends - now)

    async def _spend(self, name: str, executions: int, ends: float) -> int:
        if self._redis is not None:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incrby(name, executions)
                    pipe.expire(name, math.ceil(self.seconds) + 1)
                    spent, _ = await pipe.execute()
                return int(spent)
            except (RedisError, OSError) as error:
                logger.warning("Replay budget in memory: Redis failed (%s)", type(error).__name__)
        now = time.time()
        if len(self._memory) > MEMORY_ENTRIES:
            self._memory = {key: entry for key, entry in self._memory.items() if entry[1] > now}
        spent = self._memory.get(name, (0, ends))[0] + executions
        self._memory[name] = (spent, ends)
        return spent


class Allowance:
    """One resume's executions, taken from its user's budget a chunk at a time."""

    __slots__ = ("_budget", "_left", "_user")

    def __init__(self, budget: ReplayBudget | None, user: int) -> None:
        self._budget = budget
        self._user = user
        self._left = 0

    async def ensure(self) -> None:
        """Returns once at least one execution is allowed (waiting out spent windows)."""
        budget = self._budget
        if budget is None or self._left > 0:
            return
        chunk = min(CHUNK, max(1, budget.count))
        while True:
            wait = await budget.take(self._user, chunk)
            if wait <= 0:
                break
            await asyncio.sleep(wait)  # the next window: a time, not a condition to wait on
        self._left = chunk

    async def spend(self) -> None:
        await self.ensure()
        self._left -= 1
