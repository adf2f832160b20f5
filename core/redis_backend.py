"""A broadcaster backend for Redis that survives Redis.

broadcaster's stock backend dies silently when Redis drops its connection (broadcaster #144):
this one reconnects with backoff, resubscribes every channel it had, serializes
SUBSCRIBE/UNSUBSCRIBE (two at once on a fresh connection can lose one), and tells the
listeners on each channel that they may have missed messages while it was away.

A subscribe returns once Redis has confirmed it: a listener that subscribes and then reads what
was already said (a log) must not miss what is published in between.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from broadcaster import BroadcastBackend, Event
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.cancelling import cancel_and_wait

logger = logging.getLogger("chat.redis")

RESYNC = '{"type":"resync"}'
"""Put on every channel after a reconnect: subscribers re-read what they missed from Postgres."""

_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
# Past this, a subscribe is left to the reconnect that must be under way (it resyncs the channel).
CONFIRM_SECONDS = 5.0
# Messages read from Redis and not yet handed to the feeds' queues. Past it the reader stops
# reading: Redis keeps them in its output buffer for this connection, and past its
# `client-output-buffer-limit pubsub` it drops the connection, which reconnects and resyncs.
BACKLOG = 10_000


class ResilientRedisBackend(BroadcastBackend):
    def __init__(
        self, client: aioredis.Redis, *, max_backoff: float = 5.0, on_reconnect: Callable[[], None] | None = None
    ) -> None:
        """`on_reconnect`: called each time the pub/sub connection is back (telemetry counts it)."""
        self._redis = client
        self._on_reconnect = on_reconnect
        self._max_backoff = max_backoff
        self._channels: set[str] = set()
        self._lock = asyncio.Lock()
        self._pubsub: Any = None
        self._queue: asyncio.Queue[Event] = asyncio.Queue(BACKLOG)
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._confirming: dict[str, list[asyncio.Future[None]]] = {}
        self._deliveries: set[asyncio.Future[None]] = set()

    async def connect(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="redis-pubsub-reader")
        try:  # Start-up waits briefly for Redis, but does not fail without it.
            await asyncio.wait_for(self._connected.wait(), timeout=5)
        except TimeoutError:
            logger.warning("Redis is not reachable yet; live delivery starts when it is")

    async def disconnect(self) -> None:
        """The client is not ours to close: its owner shares it with other users."""
        if self._reader is not None:
            await cancel_and_wait([self._reader])

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.add(channel)
            if self._pubsub is None:  # not connected: the reconnect subscribes it and resyncs
                return
            confirmed = asyncio.get_running_loop().create_future()
            self._confirming.setdefault(channel, []).append(confirmed)
            await self._send(self._pubsub, "subscribe", channel)
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_SECONDS)
        except TimeoutError:
            logger.warning(
                "Redis has not confirmed a subscription in %.0f s; the reconnect resyncs it", CONFIRM_SECONDS
            )

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.discard(channel)
            await self._send(self._pubsub, "unsubscribe", channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self._redis.publish(channel, message)

    def deliver_locally(self, channel: str, message: str) -> None:
        """`message` to this process's subscribers of `channel` only, as if Redis had sent it."""
        event = Event(channel=channel, message=message)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:  # the reader waits on Redis's backlog; this waits its turn
            self._deliveries.add(task := asyncio.ensure_future(self._queue.put(event)))
            task.add_done_callback(self._deliveries.discard)

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    @staticmethod
    async def _send(pubsub: Any, command: str, *channels: str) -> None:
        """A failure here is not the caller's: the reader reconnects and resubscribes all."""
        if pubsub is None:
            return
        try:
            await getattr(pubsub, command)(*channels)
        except _REDIS_ERRORS as error:
            logger.warning("Redis %s failed (%s); it is redone on reconnect", command, error)

    async def _read_forever(self) -> None:
        attempt = 0
        while True:
            pubsub = self._redis.pubsub()
            try:
                async with self._lock:
                    await pubsub.connect()
                    if self._channels:
                        await pubsub.subscribe(*self._channels)
                    self._pubsub = pubsub
                    if attempt:
                        if self._on_reconnect is not None:
                            self._on_reconnect()
                        logger.warning("Redis is back; resubscribed %d channels", len(self._channels))
                        for channel in self._channels:
                            await self._queue.put(Event(channel=channel, message=RESYNC))
                attempt = 0
                self._connected.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        channel, data = message["channel"].decode(), message["data"].decode()
                        await self._queue.put(Event(channel=channel, message=data))
                    elif message["type"] == "subscribe":
                        for confirmed in self._confirming.pop(message["channel"].decode(), ()):
                            if not confirmed.done():
                                confirmed.set_result(None)
            except asyncio.CancelledError:
                await asyncio.shield(pubsub.aclose())
                raise
            except _REDIS_ERRORS as error:
                self._pubsub = None
                self._connected.clear()
                # The channels are subscribed again, and resynced, when Redis is back.
                confirming, self._confirming = self._confirming, {}
                for confirmed in (future for futures in confirming.values() for future in futures):
                    if not confirmed.done():
                        confirmed.set_result(None)
                attempt += 1
                delay = min(self._max_backoff, 0.1 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.0)
                logger.warning("Redis pub/sub connection lost (%s); retrying in %.2fs", error, delay)
                try:
                    await pubsub.aclose()
                except Exception:  # the connection is already broken; closing is best effort
                    pass
                await asyncio.sleep(delay)
