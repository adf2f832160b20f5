"""Telling every process that a token is revoked, and knowing that each one heard in time.

One channel per deployment carries `revoke <digest> [<digest>...]` (a token and its SSE
sessions), `revoke-user <id>` (every token of a user: logOut everywhere, a new password) and
`forget-user <id>` (a changed profile: cached viewers only); each process also has a heartbeat
channel of its own, `<revocations>:beat:<process>`, on which only it publishes and only it listens, the
time it sent the beat. Its one Redis connection carries both subscriptions, and Redis hands a
connection its messages in the order it received them, across channels: a process that hears
its own beat, sent at s, has heard every revocation announced before s, so it trusts its viewer
cache until s + LEASE_SECONDS. Both channels feed one queue (`subscribe_many`), or the order
would be lost on our side. So each beat costs Redis one delivery, not one per process: the
traffic grows with the number of processes, not with its square.

A logOut announces, deletes the token, announces again and then waits out one lease, after
which no process can still trust an entry for it. A reconnect clears the cache (what was said
meanwhile is lost), a lapsed lease empties it, and while Redis cannot take the first
announcement the logOut is refused, so a token is never half revoked.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from errors import ServiceUnavailable
from realtime.broadcast import ChannelBroadcast
from realtime.cancelling import cancel_and_wait
from realtime.redis_backend import RESYNC
from viewer_cache import ViewerCache

logger = logging.getLogger("chat.revocations")

BEAT_SECONDS = 0.1
LEASE_SECONDS = 0.5
# Covers clock-rate differences between processes and the loop's own delay in waking up.
MARGIN_SECONDS = 0.1
ANNOUNCE_TIMEOUT = 2.0


class Revocations:
    def __init__(self, broadcast: ChannelBroadcast, cache: ViewerCache, channel: str, *, shared: bool) -> None:
        """`shared`: other processes may hold tokens (Redis); otherwise this one alone does."""
        self._broadcast = broadcast
        self._cache = cache
        self._channel = channel
        self._beat_channel = f"{channel}:beat:{uuid.uuid4().hex}"
        self._shared = shared
        self._tasks: list[asyncio.Task[None]] = []
        # Told of every revocation this process hears, and of every reconnect (after which
        # revocations may have been missed): the live engine ends or re-checks subscriptions.
        self.on_revoke: list[Callable[[str], None]] = []
        self.on_revoke_user: list[Callable[[int], None]] = []
        self.on_resync: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="revocations-listener"),
            asyncio.create_task(self._beat(), name="revocations-heartbeat"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        self._cache.lapse()

    async def revoke(self, digest: str | Sequence[str], delete: Callable[[], Awaitable[None]]) -> None:
        """Delete the tokens with `delete`; once this returns, no process accepts them."""
        digests = [digest] if isinstance(digest, str) else list(digest)
        await self._revoke("revoke " + " ".join(digests), delete)

    async def revoke_user(self, user_id: int, delete: Callable[[], Awaitable[None]]) -> None:
        """Delete every token of the user with `delete`; once this returns, no process accepts one."""
        await self._revoke(f"revoke-user {int(user_id)}", delete)

    async def forget_user(self, user_id: int) -> None:
        """Every process forgets the user's cached viewers (their profile changed), ending
        nothing. Best effort: a process that misses it re-reads within ENTRY_SECONDS."""
        message = f"forget-user {int(user_id)}"
        self._heard_revocation(message)
        if self._shared and self.running:
            try:
                await self._announce(message)
            except ServiceUnavailable:
                pass

    async def _revoke(self, message: str, delete: Callable[[], Awaitable[None]]) -> None:
        if not self.running:
            await delete()  # no process of this deployment caches viewers
            return
        if self._shared:
            await self._announce(message)  # refused here, nothing has changed yet
        await delete()
        self._heard_revocation(message)
        if not self._shared:
            return
        try:
            # Again, for lookups that read the token between the first announcement and the delete.
            await self._announce(message)
        except ServiceUnavailable:
            logger.error("A revocation reached Redis only before the token was deleted")
        await asyncio.sleep(LEASE_SECONDS + MARGIN_SECONDS)

    async def _announce(self, message: str) -> None:
        try:
            async with asyncio.timeout(ANNOUNCE_TIMEOUT):
                await self._broadcast.publish(self._channel, message)
        except Exception as error:
            logger.warning("Announcing a revocation failed (%s)", type(error).__name__)
            raise ServiceUnavailable("Signing out needs Redis, which is unreachable; try again shortly.") from None

    async def _listen(self) -> None:
        while True:
            try:
                # Revocations first: a beat heard must never precede the subscription to them.
                async with self._broadcast.subscribe_many(self._channel, self._beat_channel) as subscriber:
                    async for event in subscriber:  # type: ignore[union-attr]
                        if event is not None:
                            self._hear(event.channel, event.message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("The revocation listener failed; restarting it")
            self._cache.lapse()
            for listener in self.on_resync:  # what was announced meanwhile is lost
                listener()
            await asyncio.sleep(BEAT_SECONDS)

    def _hear(self, channel: str, message: str) -> None:
        if message == RESYNC:
            self._cache.clear()
            if channel == self._channel:
                for listener in self.on_resync:
                    listener()
        elif channel == self._beat_channel:
            self._cache.renew(float(message) + LEASE_SECONDS)
        else:
            self._heard_revocation(message)

    def _heard_revocation(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        if kind == "revoke":
            for digest in rest.split():
                self._revoked(digest)
        elif kind == "revoke-user" and rest.isdigit():
            user_id = int(rest)
            self._cache.revoke_user(user_id)
            for user_listener in self.on_revoke_user:
                user_listener(user_id)
        elif kind == "forget-user" and rest.isdigit():
            self._cache.revoke_user(int(rest))

    def _revoked(self, digest: str) -> None:
        self._cache.revoke(digest)
        for listener in self.on_revoke:
            listener(digest)

    async def _beat(self) -> None:
        while True:
            sent = time.monotonic()
            try:
                async with asyncio.timeout(LEASE_SECONDS):
                    await self._broadcast.publish(self._beat_channel, repr(sent))
            except Exception as error:  # the lease lapses; Redis's own outage is logged by its backend
                logger.debug("Heartbeat not sent (%s)", type(error).__name__)
            await asyncio.sleep(BEAT_SECONDS)
