"""Protocol keepalives from one timer per process, not one sleeping task per connection.

graphql-transport-ws gets `ping` (the client answers `pong`); the legacy protocol gets `ka`,
which subscriptions-transport-ws needs within 30 s once it has seen one. Both keep Heroku's
router, which drops a connection idle for 55 s, from cutting us off. Frames go through each
connection's outbox, so a slow socket never holds up the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable


class Keepalive:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._members: dict[Hashable, tuple[Callable[[bytes], None], bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, key: Hashable, send: Callable[[bytes], None], frame: bytes) -> None:
        self._members[key] = (send, frame)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="keepalive")

    def discard(self, key: Hashable) -> None:
        self._members.pop(key, None)

    async def _run(self) -> None:
        while self._members:
            await asyncio.sleep(self.interval)
            for send, frame in list(self._members.values()):
                send(frame)
