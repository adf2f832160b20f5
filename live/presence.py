"""Who is online, per user across every connection of every worker of every dyno.

Each WebSocket connection's user is kept in the presence sets of their groups (a chat's rooms)
for `hold` seconds, renewed by its process every third of that while it is open; a closed
connection is taken out only `offline_after` seconds later, so a recycled worker or a deploy
(clients reconnect within seconds) never shows anyone going offline. A killed dyno renews
nothing: its users go once their time runs out, when every subscriber's feed reads the set
again. Changes are announced on each group's topic at most every ANNOUNCE_SECONDS (a reconnect
storm announces each once).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from core.cancelling import cancel_and_wait
from identity.auth import Viewer
from live.expiring import ExpiringSets
from live.publisher import Publisher

ANNOUNCE_SECONDS = 0.2

logger = logging.getLogger("chat.presence")

GroupsOf = Callable[[int], Awaitable[tuple[int, ...]]]


class Batches:
    """Connections' groups sent to Redis a batch at a time, one round trip each, the next batch
    being those added meanwhile: a reconnect storm's thousands of connections, or a thousand
    clients leaving together, cost a few pipelines on one Redis connection. A command each
    opened a connection for nearly every one of them (each kept in the pool after)."""

    def __init__(
        self,
        send: Callable[[dict[str, tuple[int, ...]]], Awaitable[None]],
        spawn: Callable[[Any], None],
        failure: str,
    ) -> None:
        self._send = send
        self._spawn = spawn
        self._failure = failure  # logged, with the error's type, for a batch that failed
        self._pending: dict[str, tuple[int, ...]] = {}
        self._sending = False

    def add(self, key: str, groups: tuple[int, ...]) -> None:
        self._pending[key] = groups
        if not self._sending:
            self._sending = True
            self._spawn(self._drain())

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)
            while self._pending:
                batch, self._pending = self._pending, {}
                try:
                    await self._send(batch)
                except Exception as error:  # presence is best effort; held entries expire
                    logger.warning(self._failure, type(error).__name__)
        finally:
            self._sending = False


class PresenceTracker:
    """This process's connections in the presence sets; changes announced at most every
    ANNOUNCE_SECONDS per group (a reconnect storm announces each once, not once per client)."""

    def __init__(
        self,
        sets: ExpiringSets,
        publisher: Publisher,
        groups_of: GroupsOf,
        topic: Callable[[int], str],
        *,
        hold: float = 45.0,
        offline_after: float = 5.0,
    ) -> None:
        self._sets = sets
        self._hold_seconds = hold
        self._offline_after = offline_after
        self._publisher = publisher
        self._groups_of = groups_of
        self._topic = topic
        self._connections: dict[str, tuple[int, tuple[int, ...]]] = {}  # key -> (user, groups)
        self._changed: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Connections read, to be held; connections released, to be taken out.
        self._recording = Batches(self._hold, self._spawn, "Presence not recorded (%s)")
        self._leaving = Batches(self._take_out, self._spawn, "Presence not released (%s)")

    async def start(self) -> None:
        self._spawn(self._renew_forever())
        self._spawn(self._announce_forever())

    async def stop(self) -> None:
        """What this process held stays until its time runs out: its clients reconnect to the next."""
        for timer in self._timers.values():
            timer.cancel()
        await cancel_and_wait(self._tasks)

    def connected(self, viewer: Viewer) -> str:
        """A connection's key; it is recorded in the background (the ack does not wait)."""
        key = f"{viewer.id}:{uuid.uuid4().hex[:12]}"
        self._connections[key] = (viewer.id, ())
        self._spawn(self._record(key, viewer.id))
        return key

    async def _record(self, key: str, user_id: int) -> None:
        try:
            groups = await self._groups_of(user_id)
        except Exception as error:  # presence is best effort: a chat without it still works
            logger.warning("Presence not recorded (%s)", type(error).__name__)
            return
        if key in self._connections:
            self._connections[key] = (user_id, groups)
            self._recording.add(key, groups)

    def disconnected(self, key: str) -> None:
        if key in self._connections:
            self._timers[key] = asyncio.get_running_loop().call_later(self._offline_after, self._release, key)

    async def joined(self, user_id: int, group: int) -> None:
        """A member who just joined a group is online in it at once (they are using it), and this
        process's connections of theirs hold it from now on."""
        for key, (user, groups) in list(self._connections.items()):
            if user == user_id and group not in groups:
                self._connections[key] = (user, (*groups, group))
        try:
            await self._hold({f"{user_id}:joined": (group,)})
        except Exception as error:  # the join stands; the next renewal holds it
            logger.warning("Presence not recorded (%s)", type(error).__name__)

    def _release(self, key: str) -> None:
        self._timers.pop(key, None)
        held = self._connections.pop(key, None)
        if held is not None and held[1]:
            self._leaving.add(key, held[1])

    async def _take_out(self, leaving: dict[str, tuple[int, ...]]) -> None:
        keys, group_of = self._by_topic(leaving)
        removed = await self._sets.remove_many(keys)
        self._changed.update(group_of[topic] for topic, count in removed.items() if count)

    async def _hold(self, held: dict[str, tuple[int, ...]]) -> None:
        until = time.time() + self._hold_seconds
        keys, group_of = self._by_topic(held)
        added = await self._sets.add_many({topic: dict.fromkeys(found, until) for topic, found in keys.items()})
        self._changed.update(group_of[topic] for topic, count in added.items() if count)

    def _by_topic(self, groups_of: dict[str, tuple[int, ...]]) -> tuple[dict[str, list[str]], dict[str, int]]:
        """The connections' keys by their groups' topics, and each topic's group."""
        keys: dict[str, list[str]] = {}
        group_of: dict[str, int] = {}
        for key, groups in groups_of.items():
            for group in groups:
                topic = self._topic(group)
                keys.setdefault(topic, []).append(key)
                group_of[topic] = group
        return keys, group_of

    async def _renew_forever(self) -> None:
        """Every connection's groups read again (joins and leaves since), and held again."""
        while True:
            await asyncio.sleep(self._hold_seconds / 3)
            try:
                users = {user for user, _ in self._connections.values()}
                found = await asyncio.gather(*(self._groups_of(user) for user in users))
                groups_by_user = dict(zip(users, found, strict=True))
                for key, (user, _) in list(self._connections.items()):
                    self._connections[key] = (user, groups_by_user.get(user, ()))
                await self._hold({key: groups for key, (_, groups) in self._connections.items()})
            except Exception as error:
                logger.warning("Presence not renewed (%s)", type(error).__name__)

    async def _announce_forever(self) -> None:
        while True:
            await asyncio.sleep(ANNOUNCE_SECONDS)
            changed, self._changed = self._changed, set()
            for group in changed:
                await self._publisher.event(self._topic(group), {"changed": True})

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
