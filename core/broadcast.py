"""The process's broadcast: Redis when REDIS_URL is set, in-process memory otherwise.

broadcaster's public `Broadcast` carries the fan-out (one listener task handing each event to
the queue of every subscriber of its channel), over a backend of ours. Nothing of broadcaster's
beyond `Broadcast(backend=...)`, `subscribe`, `publish`, `connect`, `disconnect`,
`BroadcastBackend` and `Event` is used. What we add around it, and why:

- Subscribers of one channel join it one at a time (a lock per channel): upstream, two first
  subscribers of a channel overwrite each other's queue set, and the second may start listening
  before the backend has subscribed. A subscribe returns once the backend's subscription is in
  place.
- Several channels on one queue, their order kept (`subscribe_many`): broadcaster sees one
  channel named after all of them (`GroupingBackend`), so their events arrive through one
  upstream queue in the order the backend delivered them.
- A bound on what a slow reader keeps (`ResyncingQueue`): upstream queues are unbounded, so each
  subscription's events are moved at once from broadcaster's queue into ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from broadcaster import Broadcast, BroadcastBackend, Event
from redis import asyncio as aioredis

from core.cancelling import cancel_and_wait
from core.redis_backend import RESYNC, ResilientRedisBackend

logger = logging.getLogger("chat.live")

# Joins the channels of one `subscribe_many` into the one name broadcaster sees; a channel
# name never holds it.
SEPARATOR = "\x1f"


class LocalDelivery(Protocol):
    def deliver_locally(self, channel: str, message: str) -> None: ...


class LocalBackend(BroadcastBackend):
    """This process's memory: what is published is heard here only (one process, no Redis)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channel: str) -> None:
        pass

    async def unsubscribe(self, channel: str) -> None:
        pass

    async def publish(self, channel: str, message: Any) -> None:
        self.deliver_locally(channel, message)

    def deliver_locally(self, channel: str, message: str) -> None:
        self._queue.put_nowait(Event(channel=channel, message=message))

    async def next_published(self) -> Event:
        return await self._queue.get()


class Grouped(Event):
    """An event of `origin`, routed by broadcaster to the subscribers of a group of channels."""

    def __init__(self, group: str, event: Event) -> None:
        super().__init__(channel=group, message=event.message)
        self.origin = event.channel


class GroupingBackend(BroadcastBackend):
    """Wraps the real backend. broadcaster subscribes to groups ("a", or "a<SEP>b" for a
    `subscribe_many("a", "b")`); the backend under it to each channel once, in the order given,
    while any group holds it. An event of a channel comes out once per group that holds it, in
    the order the backend delivered it. A group's subscribe returns once every one of its
    channels' subscriptions is in place, whoever started it."""

    def __init__(self, inner: BroadcastBackend) -> None:
        self.inner = inner
        self._groups: dict[str, set[str]] = {}  # channel -> the groups that hold it
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._pending: deque[Event] = deque()

    async def connect(self) -> None:
        await self.inner.connect()

    async def disconnect(self) -> None:
        await self.inner.disconnect()

    async def subscribe(self, group: str) -> None:
        for channel in group.split(SEPARATOR):
            self._groups.setdefault(channel, set()).add(group)
            ready = self._ready.get(channel)
            if ready is None:
                ready = self._ready[channel] = asyncio.get_running_loop().create_future()
                try:
                    await self.inner.subscribe(channel)
                    ready.set_result(None)
                except BaseException as error:
                    self._forget(group)
                    if isinstance(error, asyncio.CancelledError):
                        ready.cancel()
                    else:
                        ready.set_exception(error)
                        ready.exception()  # retrieved: the waiters raise it themselves
                    raise
            try:
                await asyncio.shield(ready)
            except BaseException:
                self._forget(group)
                raise

    def _forget(self, group: str) -> list[str]:
        """`group` out of every channel's groups (after a subscribe that failed, or on its
        unsubscribe), without awaiting anything: the channels no group holds any longer."""
        emptied = []
        for channel in group.split(SEPARATOR):
            groups = self._groups.get(channel)
            if groups is not None:
                groups.discard(group)
                if not groups:
                    del self._groups[channel]
                    self._ready.pop(channel, None)
                    emptied.append(channel)
        return emptied

    @property
    def held(self) -> int:
        """How many channels some group holds."""
        return len(self._groups)

    async def unsubscribe(self, group: str) -> None:
        for channel in self._forget(group):  # every channel left before awaiting anything
            await self.inner.unsubscribe(channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self.inner.publish(channel, message)

    async def next_published(self) -> Event:
        while not self._pending:
            event = await self.inner.next_published()
            for group in self._groups.get(event.channel, ()):
                self._pending.append(event if group == event.channel else Grouped(group, event))
        return self._pending.popleft()


class Subscriber:
    """What a subscription reads: `get()`, or `async for`, each an `Event` of one of its
    channels."""

    def __init__(self, queue: asyncio.Queue[Event]) -> None:
        self._queue = queue

    async def get(self) -> Event:
        return await self._queue.get()

    async def __aiter__(self) -> AsyncGenerator[Event, None]:
        while True:
            yield await self._queue.get()


class ChannelBroadcast:
    """broadcaster's `Broadcast` over a `GroupingBackend` of ours (see the module's docstring)."""

    def __init__(self, backend: BroadcastBackend) -> None:
        self.backend = backend
        self._grouping = GroupingBackend(backend)
        self._broadcast = Broadcast(backend=self._grouping)
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    async def connect(self) -> None:
        await self._broadcast.connect()

    async def disconnect(self) -> None:
        await self._broadcast.disconnect()

    async def publish(self, channel: str, message: Any) -> None:
        await self._broadcast.publish(channel, message)

    def subscribe(self, channel: str, *, bound: int | None = None) -> AbstractAsyncContextManager[Subscriber]:
        return self.subscribe_many(channel, bound=bound)

    @asynccontextmanager
    async def subscribe_many(self, *channels: str, bound: int | None = None) -> AsyncIterator[Subscriber]:
        """One queue for several channels, so its reader sees their events interleaved as the
        backend delivered them; one subscription per channel, read by one task, loses that order.
        The channels' backend subscriptions are made in the order given.

        With a `bound`, a reader that falls that many messages behind loses them for one RESYNC
        per channel (see ResyncingQueue); without, the queue is unbounded (for readers whose
        every message is cheap and must be seen, revocations)."""
        queue: asyncio.Queue[Event] = asyncio.Queue() if bound is None else ResyncingQueue(bound)
        async with self._joined(SEPARATOR.join(channels)) as upstream:
            mover = asyncio.create_task(self._move(upstream, queue), name="broadcast subscriber")
            try:
                yield Subscriber(queue)
            finally:
                await cancel_and_wait([mover])

    def deliver_locally(self, channel: str, message: str) -> None:
        """A message for this process's subscribers of `channel` only, as if it came back from
        the backend: what a publish that failed must still do here (a leave's end)."""
        backend: LocalDelivery = self.backend  # type: ignore[assignment]
        backend.deliver_locally(channel, message)

    @staticmethod
    async def _move(upstream: Any, queue: asyncio.Queue[Event]) -> None:
        """broadcaster's queue into ours, as each event arrives; ends when broadcaster ends it."""
        async for event in upstream:
            queue.put_nowait(Event(event.origin, event.message) if isinstance(event, Grouped) else event)

    @asynccontextmanager
    async def _joined(self, group: str) -> AsyncIterator[Any]:
        """broadcaster's subscription to `group`, joined under the group's lock (one join at a
        time) and left whatever happens: a leave cancelled half-way is finished in the
        background, and so is a join (broadcaster cannot leave a channel it has not finished
        joining), or broadcaster would keep filling a queue nobody reads."""
        lock, users = self._locks.setdefault(group, (asyncio.Lock(), [0]))
        users[0] += 1
        subscription = self._broadcast.subscribe(group)
        try:
            await lock.acquire()
            joining = asyncio.ensure_future(subscription.__aenter__())
            try:
                upstream = await asyncio.shield(joining)
            except asyncio.CancelledError:
                users[0] += 1  # the background join holds the group's lock until it is done
                task = asyncio.ensure_future(self._leave_when_joined(joining, subscription, lock))
                task.add_done_callback(lambda _: self._release(group, users))
                raise
            except BaseException:
                lock.release()
                raise
            lock.release()
            try:
                yield upstream
            finally:
                leaving = asyncio.ensure_future(subscription.__aexit__(None, None, None))
                leaving.add_done_callback(_logged)
                await asyncio.shield(leaving)
        finally:
            self._release(group, users)

    @staticmethod
    async def _leave_when_joined(joining: asyncio.Future[Any], subscription: Any, lock: asyncio.Lock) -> None:
        try:
            await joining
        except Exception as error:
            logger.warning("A subscription cancelled while joining failed to join (%s)", error)
            return
        finally:
            lock.release()
        try:
            await subscription.__aexit__(None, None, None)
        except Exception as error:
            logger.warning("Leaving a broadcast subscription failed (%s)", error)

    def _release(self, group: str, users: list[int]) -> None:
        users[0] -= 1
        if not users[0] and self._locks.get(group, (None, None))[1] is users:
            del self._locks[group]

    @property
    def held(self) -> int:
        """How many channels and groups of them are held here (0: nothing left behind)."""
        return len(self._locks) + self._grouping.held


def _logged(leaving: asyncio.Future[Any]) -> None:
    if not leaving.cancelled() and leaving.exception() is not None:
        logger.warning("Leaving a broadcast subscription failed (%s)", leaving.exception())


class ResyncingQueue(asyncio.Queue[Event]):
    """A subscriber's queue of at most `bound` messages. When a message arrives to a full queue,
    what it holds is dropped, with that message, for one RESYNC per channel: the reader (a live
    feed) re-reads what it missed from the topic's log, its state, or re-checks its
    subscriptions, as after a Redis outage. Memory stays bounded however far behind the reader
    is, and nothing on a logged topic is lost. Never blocks the task that fills it."""

    def __init__(self, bound: int) -> None:
        super().__init__()
        self.bound = max(1, bound)
        self.overflows = 0

    def put_nowait(self, item: Event) -> None:
        if self.qsize() >= self.bound:
            channels = {item.channel}
            while not self.empty():
                dropped = self.get_nowait()
                if dropped.message != RESYNC:
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


def open_broadcast(redis: aioredis.Redis | None, on_reconnect: Callable[[], None] | None = None) -> ChannelBroadcast:
    """Over `redis` (its own pub/sub connection), or in this process's memory without it.
    Not connected yet: the app's lifespan connects it. `on_reconnect`: see ResilientRedisBackend."""
    backend = LocalBackend() if redis is None else ResilientRedisBackend(redis, on_reconnect=on_reconnect)
    return ChannelBroadcast(backend)


async def redis_reachable(broadcast: ChannelBroadcast) -> bool | None:
    """None when there is no Redis to reach (the in-process broadcast)."""
    backend = broadcast.backend
    if not isinstance(backend, ResilientRedisBackend):
        return None
    return await backend.ping()
