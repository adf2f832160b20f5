"""How much live delivery one user holds at once: subscriptions, and connections or streams,
counted across every transport, worker and dyno.

With Redis, each held slot is a member of a sorted set per user and kind
(`live:subscriptions:<user>`, `live:connections:<user>`), named after the process that holds it
and scored by when its lease runs out. A process renews its members' leases every third of
`lease_seconds`, so the slots of a process that was killed (a dyno gone, a worker OOM-killed)
stop counting at most `lease_seconds` later. Taking a slot is one Lua script (drop the expired
members, count, add if under the limit): atomic across every process. Giving one back is a ZREM.

Without Redis (the embedded default runs one worker) the counts are this process's memory.

When Redis cannot answer, a slot is counted in this process's memory instead, against the same
limit: the limit then holds per process rather than across them (fails open per process), and
nobody is refused because Redis is away. Those slots are never written to Redis later.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from core.cancelling import cancel_and_wait
from core.redis_clients import RedisBreaker

logger = logging.getLogger("chat.live")

STOP_SECONDS = 2.0
SUBSCRIPTIONS = "subscriptions"
CONNECTIONS = "connections"

# KEYS[1]: the user's set. ARGV: now, limit, lease end, member, lease in ms.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: users' sets. ARGV[1]: `(now` (unexpired members only). Each set's count of them.
_COUNT = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('ZCOUNT', key, ARGV[1], '+inf')
end
return counts
"""


@dataclass(eq=False, slots=True)
class Slot:
    """One held subscription or connection; `release` gives it back (safe to call twice)."""

    quota: LiveQuota
    kind: str
    user: int
    member: str
    shared: bool  # counted in Redis (else in this process's memory)
    released: bool = field(default=False)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.quota._release(self)


class LiveQuota:
    def __init__(
        self,
        redis: aioredis.Redis | None,
        prefix: str,
        *,
        max_subscriptions: int,
        max_connections: int,
        lease_seconds: float = 30.0,
        breaker: RedisBreaker | None = None,
    ) -> None:
        self._redis = redis
        self._breaker = breaker  # bounds `take` (a subscribe waits on it); RedisUnavailable is a RedisError
        self._prefix = prefix
        self.limits = {SUBSCRIPTIONS: max_subscriptions, CONNECTIONS: max_connections}
        self._lease = lease_seconds
        self._process = uuid.uuid4().hex[:12]
        self._next = 0
        self._held: dict[str, Slot] = {}  # this process's slots in Redis, by member
        self._local: dict[tuple[str, int], set[str]] = {}  # (kind, user) -> members, in memory
        self._renewer: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[Any]] = set()
        self._script: Any = redis.register_script(_TAKE) if redis is not None else None
        # Who of a room's members is connected: one command for all of them, not one each.
        self._count: Any = redis.register_script(_COUNT) if redis is not None else None

    def _key(self, kind: str, user: int) -> str:
        return f"{self._prefix}live:{kind}:{user}"

    async def start(self) -> None:
        if self._redis is not None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="live-quota-leases")

    async def stop(self) -> None:
        """Every slot this process still holds is given back now, not when its lease runs out:
        after a deploy or a recycle, clients reconnect within seconds and must find their slots
        free (a SIGKILLed process has no such chance; its leases expire)."""
        if self._renewer is not None:
            await cancel_and_wait([self._renewer])
        held, self._held = list(self._held.values()), {}
        try:
            async with asyncio.timeout(STOP_SECONDS):
                if self._redis is not None and held:
                    by_key: dict[str, list[str]] = {}
                    for slot in held:
                        by_key.setdefault(self._key(slot.kind, slot.user), []).append(slot.member)
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key, members in by_key.items():
                            pipe.zrem(key, *members)
                        await pipe.execute()
                if self._releasing:
                    await asyncio.gather(*self._releasing, return_exceptions=True)
        except (RedisError, OSError, TimeoutError) as error:
            logger.warning("Giving back live slots at shutdown failed (%s); their leases expire", type(error).__name__)
        await cancel_and_wait(self._releasing)

    async def take(self, kind: str, user: int) -> Slot | None:
        """A slot of `kind` for `user`, or None when they hold the limit already."""
        limit = self.limits[kind]
        self._next += 1
        member = f"{self._process}:{self._next}"
        if self._script is not None:
            now = time.time()
            try:
                script = partial(
                    self._script,
                    keys=[self._key(kind, user)],
                    args=[now, limit, now + self._lease, member, int(self._lease * 1000) + 1000],
                )
                taken = await (script() if self._breaker is None else self._breaker.call(script))
            except (RedisError, OSError) as error:
                logger.warning("Counting live %s in memory: Redis failed (%s)", kind, type(error).__name__)
            else:
                if not taken:
                    return None
                slot = self._held[member] = Slot(self, kind, user, member, shared=True)
                return slot
        members = self._local.setdefault((kind, user), set())
        if len(members) >= limit:
            return None
        members.add(member)
        return Slot(self, kind, user, member, shared=False)

    async def connected(self, users: list[int]) -> tuple[set[int], bool]:
        """Those of `users` who hold a live connection or stream (a WebSocket, an SSE or
        multipart stream) anywhere now, and whether that is known everywhere. With Redis: any
        unexpired member of their set, whichever process holds it. Without Redis (one process):
        this process's. When Redis does not answer (within the breaker's timeout, or while it is
        open; else STOP_SECONDS): this process's only, and False."""
        mine = {slot.user for slot in self._held.values() if slot.kind == CONNECTIONS}
        mine |= {user for (kind, user), members in self._local.items() if kind == CONNECTIONS and members}
        if self._redis is None:
            return {user for user in users if user in mine}, True
        now = time.time()

        async def count() -> list[int]:
            if not users:
                return []
            return await self._count(keys=[self._key(CONNECTIONS, user) for user in users], args=[f"({now}"])

        try:
            async with asyncio.timeout(STOP_SECONDS):
                counts = await (count() if self._breaker is None else self._breaker.call(count))
        except (RedisError, OSError, TimeoutError) as error:
            logger.warning(
                "Reading who is connected failed (%s): this process's connections only", type(error).__name__
            )
            return {user for user in users if user in mine}, False
        return {user for user, count in zip(users, counts, strict=True) if count or user in mine}, True

    def held(self, kind: str, user: int) -> int:
        """This process's slots of `kind` for `user` (for tests and logs)."""
        local = len(self._local.get((kind, user), ()))
        return local + sum(1 for slot in self._held.values() if slot.kind == kind and slot.user == user)

    def _release(self, slot: Slot) -> None:
        if not slot.shared:
            members = self._local.get((slot.kind, slot.user))
            if members is not None:
                members.discard(slot.member)
                if not members:
                    del self._local[(slot.kind, slot.user)]
            return
        self._held.pop(slot.member, None)
        self._spawn(self._remove(slot))

    async def _remove(self, slot: Slot) -> None:
        assert self._redis is not None
        try:
            await self._redis.zrem(self._key(slot.kind, slot.user), slot.member)
        except (RedisError, OSError) as error:  # its lease runs out instead
            logger.warning("Giving back a live slot failed (%s); its lease expires", type(error).__name__)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _renew_forever(self, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        while True:
            await sleep(self._lease / 3)
            try:
                await self.renew()
            except (RedisError, OSError) as error:
                logger.warning("Renewing live slots failed (%s); retried shortly", type(error).__name__)

    async def renew(self) -> None:
        """Every slot this process holds in Redis, leased again (one round trip)."""
        if self._redis is None or not self._held:
            return
        until = time.time() + self._lease
        by_key: dict[str, dict[str, float]] = {}
        for slot in list(self._held.values()):
            by_key.setdefault(self._key(slot.kind, slot.user), {})[slot.member] = until
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, members in by_key.items():
                pipe.zadd(key, members)
                pipe.pexpire(key, int(self._lease * 1000) + 1000)
            await pipe.execute()
        # A slot released while the pipeline ran was written back: take it out again.
        for key, members in by_key.items():
            gone = [member for member in members if member not in self._held]
            if gone:
                await self._redis.zrem(key, *gone)


def too_many_subscriptions(kind: str, limit: int) -> dict:
    what = "subscriptions" if kind == SUBSCRIPTIONS else "live connections and streams"
    return {
        "message": f"At most {limit} {what} per user at once.",
        "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS"},
    }


TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"


def too_many_connections(limit: int) -> dict:
    """Why a WebSocket's connection_init is refused: its user holds `limit` connections."""
    return {
        "message": f"At most {limit} live connections and streams per user at once.",
        "extensions": {"code": TOO_MANY_CONNECTIONS},
    }
