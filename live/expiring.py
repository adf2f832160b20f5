"""Sets whose members expire: shared by every process through Redis (a sorted set per key, each
member scored by when it expires), or in this process's memory on the embedded default. What
typing and presence are kept in: never Postgres, never the log.

Each Redis call goes through the process's breaker when there is one (redis_client.RedisBreaker):
a Redis that answers nothing fails the call within REDIS_COMMAND_TIMEOUT, with RedisUnavailable,
instead of holding the request that waits on it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis import asyncio as aioredis

from core.redis_clients import RedisBreaker

T = TypeVar("T")


class ExpiringSets(Protocol):
    async def add(self, key: str, members: dict[str, float]) -> int:
        """Add or renew members, each until its time (epoch seconds): how many are new."""
        ...

    async def add_many(self, entries: dict[str, dict[str, float]]) -> dict[str, int]:
        """`add` for several keys at once (one round trip): how many are new in each."""
        ...

    async def remove(self, key: str, members: list[str]) -> int:
        """How many of `members` were there."""
        ...

    async def remove_many(self, entries: dict[str, list[str]]) -> dict[str, int]:
        """`remove` for several keys at once (one round trip): how many were there in each."""
        ...

    async def live(self, key: str) -> dict[str, float]:
        """The members whose time has not passed, with their times."""
        ...


class RedisExpiringSets:
    def __init__(self, redis: aioredis.Redis, prefix: str, breaker: RedisBreaker | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._breaker = breaker

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        return await (command() if self._breaker is None else self._breaker.call(command))

    async def add(self, key: str, members: dict[str, float]) -> int:
        return (await self.add_many({key: members}))[key]

    async def add_many(self, entries: dict[str, dict[str, float]]) -> dict[str, int]:
        if not entries:
            return {}
        return await self._call(lambda: self._add_many(entries))

    async def _add_many(self, entries: dict[str, dict[str, float]]) -> dict[str, int]:
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, members in entries.items():
                name = self._prefix + key
                pipe.zremrangebyscore(name, "-inf", now)
                pipe.zadd(name, members)
                pipe.expireat(name, int(max(members.values())) + 1)
            results = await pipe.execute()
        return {key: int(results[index * 3 + 1]) for index, key in enumerate(entries)}

    async def remove(self, key: str, members: list[str]) -> int:
        return int(await self._call(lambda: self._redis.zrem(self._prefix + key, *members)))

    async def remove_many(self, entries: dict[str, list[str]]) -> dict[str, int]:
        if not entries:
            return {}
        return await self._call(lambda: self._remove_many(entries))

    async def _remove_many(self, entries: dict[str, list[str]]) -> dict[str, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, members in entries.items():
                pipe.zrem(self._prefix + key, *members)
            results = await pipe.execute()
        return {key: int(result) for key, result in zip(entries, results, strict=True)}

    async def live(self, key: str) -> dict[str, float]:
        found: Any = await self._call(
            lambda: self._redis.zrangebyscore(self._prefix + key, time.time(), "+inf", withscores=True)
        )
        return {member.decode(): float(score) for member, score in found}


class MemoryExpiringSets:
    """One process's: the embedded default runs one worker."""

    def __init__(self) -> None:
        self._sets: dict[str, dict[str, float]] = {}

    async def add(self, key: str, members: dict[str, float]) -> int:
        found = self._pruned(key)
        added = sum(1 for member in members if member not in found)
        found.update(members)
        self._sets[key] = found
        return added

    async def add_many(self, entries: dict[str, dict[str, float]]) -> dict[str, int]:
        return {key: await self.add(key, members) for key, members in entries.items()}

    async def remove(self, key: str, members: list[str]) -> int:
        found = self._pruned(key)
        removed = sum(1 for member in members if found.pop(member, None) is not None)
        if not found:
            self._sets.pop(key, None)
        return removed

    async def remove_many(self, entries: dict[str, list[str]]) -> dict[str, int]:
        return {key: await self.remove(key, members) for key, members in entries.items()}

    async def live(self, key: str) -> dict[str, float]:
        return dict(self._pruned(key))

    def _pruned(self, key: str) -> dict[str, float]:
        found = self._sets.get(key, {})
        now = time.time()
        for member in [member for member, until in found.items() if until <= now]:
            del found[member]
        if not found:
            self._sets.pop(key, None)
        return found
