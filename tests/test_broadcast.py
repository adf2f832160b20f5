"""The broadcast over broadcaster's public `Broadcast`: concurrent first subscribers, cancelled
joins, several channels on one queue, bounded readers."""

from __future__ import annotations

import asyncio
from typing import Any

from broadcaster import BroadcastBackend, Event

from core.broadcast import ChannelBroadcast, LocalBackend, ResyncingQueue, open_broadcast
from core.redis_backend import RESYNC


class SlowBackend(LocalBackend):
    """Subscribes only when told to: two first subscribers meet while the first waits."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.asked = asyncio.Event()  # a subscribe has reached the backend and waits at the gate
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []

    async def subscribe(self, channel: str) -> None:
        self.asked.set()
        await self.gate.wait()
        self.subscribed.append(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.unsubscribed.append(channel)


async def received(subscriber: Any, n: int) -> list[tuple[str, str]]:
    events = [await asyncio.wait_for(subscriber.get(), 2) for _ in range(n)]
    return [(event.channel, event.message) for event in events]


async def test_two_first_subscribers_of_a_channel_both_hear_it_once_subscribed() -> None:
    backend = SlowBackend()
    channels = ChannelBroadcast(backend)
    await channels.connect()
    try:
        entered: list[Any] = []

        async def join(stack: Any) -> None:
            entered.append(await stack.enter_async_context(channels.subscribe("a")))

        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            joins = [asyncio.create_task(join(stack)) for _ in range(2)]
            await asyncio.wait_for(backend.asked.wait(), 2)  # the first waits on the backend
            # A negative: the second join gets every chance to run ahead (a few loop turns; all
            # of this is in memory, nothing waits on I/O).
            for _ in range(20):
                await asyncio.sleep(0)
            assert entered == []  # neither listens before the backend has subscribed
            backend.gate.set()
            await asyncio.gather(*joins)
            assert backend.subscribed == ["a"]
            await channels.publish("a", "1")
            assert [await received(subscriber, 1) for subscriber in entered] == [[("a", "1")]] * 2
        assert backend.unsubscribed == ["a"] and channels.held == 0
    finally:
        await channels.disconnect()


async def test_a_join_cancelled_half_way_leaves_nothing_behind() -> None:
    backend = SlowBackend()
    channels = ChannelBroadcast(backend)
    await channels.connect()
    try:

        async def join() -> None:
            async with channels.subscribe_many("a", "b"):
                raise AssertionError("never joined")

        joining = asyncio.create_task(join())
        await asyncio.wait_for(backend.asked.wait(), 2)  # cancelled while the backend subscribes
        joining.cancel()
        await asyncio.gather(joining, return_exceptions=True)
        assert joining.cancelled()
        backend.gate.set()  # the join finishes in the background, then leaves
        async with channels.subscribe("a") as subscriber:
            await channels.publish("a", "after")
            assert await received(subscriber, 1) == [("a", "after")]
        assert channels.held == 0 and sorted(backend.unsubscribed) == sorted(backend.subscribed)
        assert set(backend.subscribed) == {"a", "b"}
    finally:
        await channels.disconnect()


async def test_a_leave_cancelled_half_way_still_leaves() -> None:
    class SlowToLeave(LocalBackend):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()
            self.asked = asyncio.Event()
            self.unsubscribed: list[str] = []

        async def unsubscribe(self, channel: str) -> None:
            self.asked.set()
            await self.gate.wait()
            self.unsubscribed.append(channel)

    backend = SlowToLeave()
    channels = ChannelBroadcast(backend)
    await channels.connect()
    try:
        inside = asyncio.Event()

        async def subscribed() -> None:
            async with channels.subscribe("a"):
                inside.set()
            raise AssertionError("never left")

        task = asyncio.create_task(subscribed())
        await inside.wait()
        task.cancel()  # while inside: the leave starts, and waits for the backend
        await asyncio.wait_for(backend.asked.wait(), 2)
        assert not task.done() or task.cancelled()
        task.cancel()  # and again while leaving
        await asyncio.gather(task, return_exceptions=True)
        backend.gate.set()
        for _ in range(20):
            await asyncio.sleep(0)
        assert backend.unsubscribed == ["a"] and channels.held == 0
        async with channels.subscribe("a") as subscriber:  # the channel works as before
            await channels.publish("a", "again")
            assert await received(subscriber, 1) == [("a", "again")]
    finally:
        await channels.disconnect()


async def test_a_channel_on_its_own_and_in_a_group_hears_each_event_once_in_each() -> None:
    channels = open_broadcast(None)
    await channels.connect()
    try:
        async with channels.subscribe("a") as alone, channels.subscribe_many("b", "a") as both:
            for channel, message in [("a", "1"), ("b", "2"), ("c", "x"), ("a", "3")]:
                await channels.publish(channel, message)
            channels.deliver_locally("b", "4")
            assert await received(alone, 2) == [("a", "1"), ("a", "3")]
            assert await received(both, 4) == [("a", "1"), ("b", "2"), ("a", "3"), ("b", "4")]
        assert channels.held == 0
    finally:
        await channels.disconnect()


async def test_a_bounded_reader_far_behind_gets_one_resync_per_channel() -> None:
    channels = open_broadcast(None)
    await channels.connect()
    try:
        async with channels.subscribe_many("a", "b", bound=3) as subscriber:
            for n, channel in enumerate("aaba"):
                await channels.publish(channel, str(n))
            await channels.publish("a", "last")
            # Four arrived for three places: all dropped for a RESYNC each; then the next one.
            assert await received(subscriber, 3) == [("a", RESYNC), ("b", RESYNC), ("a", "last")]
    finally:
        await channels.disconnect()
    queue = ResyncingQueue(1)
    queue.put_nowait(Event("a", "1"))
    queue.put_nowait(Event("a", "2"))
    assert queue.overflows == 1 and queue.get_nowait() == Event("a", RESYNC)


def test_the_backends_are_broadcasters_public_base() -> None:
    assert issubclass(LocalBackend, BroadcastBackend)
