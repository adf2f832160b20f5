"""The process's broadcast: Redis when REDIS_URL is set, in-process memory otherwise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from broadcaster import Broadcast, Event
from broadcaster._base import Subscriber
from redis import asyncio as aioredis

from core.redis_backend import RESYNC, ResilientRedisBackend

logger = logging.getLogger("chat.live")

# The one module reaching into broadcaster's internals (its subscriber table, its backend, its
# Subscriber class); tests/test_library_reaches.py fails loudly when broadcaster changes.
WRITTEN_AGAINST = "0.3.1"


class ChannelBroadcast(Broadcast):
    """broadcaster's Broadcast with a race fixed.

    Upstream, two first subscribers of one channel overwrite each other's queue set, and the
    second may start listening before the backend has subscribed. Here every subscriber
    joins the set at once and waits until the channel's backend subscription is in place.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ready: dict[str, asyncio.Future[None]] = {}

    @asynccontextmanager
    async def subscribe(self, channel: str, *, bound: int | None = None) -> AsyncIterator[Subscriber]:
        async with self.subscribe_many(channel, bound=bound) as subscriber:
            yield subscriber

    @asynccontextmanager
    async def subscribe_many(self, *channels: str, bound: int | None = None) -> AsyncIterator[Subscriber]:
        """One queue for several channels, so its reader sees their events interleaved as the
        backend delivered them; one subscription per channel, read by one task, loses that order.
        The channels' backend subscriptions are made in the order given.

        With a `bound`, a reader that falls that many messages behind loses them for one RESYNC
        per channel (see ResyncingQueue); without, the queue is unbounded (for readers whose
        every message is cheap and must be seen, revocations)."""
        queue: asyncio.Queue = asyncio.Queue() if bound is None else ResyncingQueue(bound)
        joined: list[tuple[str, set[asyncio.Queue]]] = []
        try:
            for channel in channels:
                queues = self._subscribers.setdefault(channel, set())
                queues.add(queue)
                joined.append((channel, queues))
                ready = self._ready.get(channel)
                if ready is None:
                    ready = self._ready[channel] = asyncio.get_running_loop().create_future()
                    try:
                        await self._backend.subscribe(channel)
                        ready.set_result(None)
                    except BaseException as error:
                        del self._ready[channel]
                        ready.set_exception(error)
                        raise
                await asyncio.shield(ready)
            yield Subscriber(queue)
        finally:
            emptied = []
            for channel, queues in joined:  # leave every channel before awaiting anything
                queues.discard(queue)
                if not queues and self._subscribers.get(channel) is queues:
                    del self._subscribers[channel]
                    self._ready.pop(channel, None)
                    emptied.append(channel)
            for channel in emptied:
                await self._backend.unsubscribe(channel)

    def deliver_locally(self, channel: str, message: str) -> None:
        """A message for this process's subscribers of `channel` only, as if it came back from
        the backend: what a publish that failed must still do here (a leave's end)."""
        for queue in list(self._subscribers.get(channel, ())):
            queue.put_nowait(Event(channel=channel, message=message))


class ResyncingQueue(asyncio.Queue):
    """A subscriber's queue of at most `bound` messages. When a message arrives to a full queue,
    what it holds is dropped, with that message, for one RESYNC per channel: the reader (a live
    feed) re-reads what it missed from the topic's log, its state, or re-checks its
    subscriptions, as after a Redis outage. Memory stays bounded however far behind the reader
    is, and nothing on a logged topic is lost. Never blocks the one task that fans out to every
    queue (broadcaster's listener)."""

    def __init__(self, bound: int) -> None:
        super().__init__()
        self.bound = max(1, bound)
        self.overflows = 0

    def put_nowait(self, item: Any) -> None:
        if item is not None and self.qsize() >= self.bound:
            channels = {item.channel}
            while not self.empty():
                dropped = self.get_nowait()
                if dropped is not None and dropped.message != RESYNC:
                    channels.add(dropped.channel)
            self.overflows += 1
            logger.warning(
                "A live feed fell %d messages behind on %s; it resyncs from the log",
                self.bound,
                ", ".join(sorted(channels)),
            )
            for channel in sorted(channels):
                super().put_nowait(Event(channel=channel, message=RESYNC))
            return
        super().put_nowait(item)


def open_broadcast(redis: aioredis.Redis | None) -> ChannelBroadcast:
    """Over `redis` (its own pub/sub connection), or in this process's memory without it.
    Not connected yet: the app's lifespan connects it."""
    if redis is None:
        return ChannelBroadcast("memory://")
    return ChannelBroadcast(backend=ResilientRedisBackend(redis))


async def redis_reachable(broadcast: Broadcast) -> bool | None:
    """None when there is no Redis to reach (the in-process broadcast)."""
    backend = broadcast._backend
    if not isinstance(backend, ResilientRedisBackend):
        return None
    return await backend.ping()
