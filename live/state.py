"""A topic with a state (who is typing, who is online): its feed re-reads the state once per
process on every change announced on the topic, after a resync, and at the time the state says
it expires (`refresh_at`); subscribers get the state when it changes, a new one first of all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from live.feed import Feed
from live.source import Event, LiveSource
from live.subscription import Subscription

if TYPE_CHECKING:
    from live.engine import Engine


class StateFeed(Feed):
    """A state topic's feed: its last read of the state, and when that expires."""

    def __init__(self, engine: Engine, source: LiveSource) -> None:
        super().__init__(engine, source)
        assert source.state is not None
        self.state: Callable[[], Awaitable[Event]] = source.state
        self.last_state: Event | None = None
        self._refresh: asyncio.TimerHandle | None = None

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        await super().stop()

    async def join(self, subscription: Subscription) -> None:
        """The subscriber's current state first, then every change."""
        state = subscription.source.state
        if state is None:
            self._hand_over(subscription)
            return
        event = await state()
        if subscription.feed is not self:
            return
        async with self.lock:
            if self.last_state is None:
                self._remember_state(event)
            # The feed's own read: any change since it was made reaches this subscriber now.
            event = self.last_state or event
            payload = await self.engine.execute(subscription.selection, subscription.viewer, event)
            subscription.sink.send(payload, None)
            self._hand_over(subscription)

    async def _on_event(self, event: Event) -> None:
        """A change was announced: the event only says so, the state is read again."""
        await self._reread()

    async def _on_resync(self) -> None:
        await self._reread()

    async def _reread(self) -> None:
        """The state again (a change was announced, or it expires now): delivered if it changed."""
        event = await self.state()
        changed = _settled(event) != _settled(self.last_state)
        self._remember_state(event)
        if changed:
            await self._deliver(event)

    def _remember_state(self, event: Event) -> None:
        self.last_state = event
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        refresh_at = event.get("refresh_at")
        if refresh_at is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, refresh_at - time.time())
            self._refresh = loop.call_later(delay, lambda: self.engine.spawn(self._refreshed()))

    async def _refreshed(self) -> None:
        self._refresh = None
        async with self.lock:
            await self._reread()


def _settled(state: Event | None) -> Event | None:
    """A state but for when it next expires: a renewal alone is no change to announce."""
    return None if state is None else {key: value for key, value in state.items() if key != "refresh_at"}
