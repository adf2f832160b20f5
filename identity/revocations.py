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

A revocation always takes effect, whatever Redis does. Postgres is the record: the tokens are
deleted there first (while Postgres is down the mutation fails, and nothing is revoked). Then
this process drops their cached viewers and ends their live subscriptions at once, and announces
the revocation. The mutation waits up to ANNOUNCE_SECONDS for Redis to take the announcement,
then one lease (LEASE_SECONDS + MARGIN_SECONDS), and answers; an announcement Redis did not take
is retried in the background with backoff (RETRY_FIRST to RETRY_MOST) until it does. What waits
is coalesced (digests and user ids, at most MAX_PENDING; past that, one RESYNC on the channel
stands for all of it: every process clears its cache and re-checks every live subscription),
and on shutdown it is tried once more for SHUTDOWN_SECONDS, then logged.

Why the other processes' caches are safe once the mutation answers. Announcing after the delete
is enough: a process that heard the announcement dropped the entry, and a lookup that read the
token before the delete cannot store it after (the revocation bumped the cache's epoch). A
process that trusts its cache has heard a beat of its own sent at s, so it has heard everything
Redis took before s; it trusts the cache until s + LEASE_SECONDS.
- Redis took the announcement: every beat taken after it comes after it, and a beat taken
  before it lapses within one lease, which the mutation waits out.
- Redis takes nothing (down, paused, refusing) since before the mutation gave up on it: no
  process hears a beat taken since, so every lease lapses within one lease of giving up, which
  the mutation waits out too. A lapsed cache is emptied (as it lapses, or at the latest when a
  beat renews it: ViewerCache.renew), so nothing cached before the delete is trusted again when
  Redis comes back, even if a process hears beats it sent during the outage before the retried
  announcement. In short, a stale entry survives only in a process whose lease never lapses,
  that is, only while Redis keeps taking that process's beats but not the announcement. When
  Redis returns, a process whose pub/sub connection dropped clears its cache and re-checks every
  live subscription against Postgres (RESYNC; the room sources' `check` reads the token together
  with the membership, so a revoked token's subscriptions end); one whose connection only
  stalled ends them when the retried announcement arrives.
- What is left: only this process cannot reach Redis while the others still hear their beats
  (its own network path, its connection pool exhausted). Then the others trust their cached
  entry for the token and keep its live subscriptions until the retry gets through, and until
  ENTRY_SECONDS at most (viewer_cache) for a process that never hears it (this one stopped before
  Redis took it). The mutation's own wait for Redis (ANNOUNCE_SECONDS, with retries) is what keeps
  that window small in the common case (a connection reset, which redis-py reconnects at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from core.broadcast import ChannelBroadcast
from core.cancelling import cancel_and_wait
from core.redis_backend import RESYNC
from identity.viewer_cache import ENTRY_SECONDS, ViewerCache

logger = logging.getLogger("chat.revocations")

BEAT_SECONDS = 0.1
LEASE_SECONDS = 0.5
# Covers clock-rate differences between processes and the loop's own delay in waking up.
MARGIN_SECONDS = 0.1
# How long a revoking mutation waits for Redis to take its announcement, retrying, before it
# leaves it to the background retry; and one attempt's bound there.
ANNOUNCE_SECONDS = 2.0
RETRY_FIRST, RETRY_MOST = 0.1, 2.0
# Digests and user ids waiting for Redis; past this, one RESYNC stands for them all.
MAX_PENDING = 10_000
DIGESTS_PER_MESSAGE = 64
# On shutdown, what still waits is tried once more for this long.
SHUTDOWN_SECONDS = 1.0


class RevocationListener(Protocol):
    """Told of every revocation this process hears, and of every reconnect (after which
    revocations may have been missed): the live engine ends or re-checks subscriptions."""

    def token_revoked(self, digest: str) -> None: ...

    def user_revoked(self, user_id: int) -> None: ...

    def resync(self) -> None: ...


class _Nobody:
    """Before `start`: nothing is live to end (a revocation then only deletes and forgets)."""

    def token_revoked(self, digest: str) -> None:
        return None

    def user_revoked(self, user_id: int) -> None:
        return None

    def resync(self) -> None:
        return None


NOBODY: RevocationListener = _Nobody()


class Revocations:
    def __init__(self, broadcast: ChannelBroadcast, cache: ViewerCache, channel: str, *, shared: bool) -> None:
        """`shared`: other processes may hold tokens (Redis); otherwise this one alone does."""
        self._broadcast = broadcast
        self._cache = cache
        self._channel = channel
        self._beat_channel = f"{channel}:beat:{uuid.uuid4().hex}"
        self._shared = shared
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: RevocationListener = NOBODY
        # Announcements Redis has not taken yet, one item each ("revoke <digest>",
        # "revoke-user <id>", or RESYNC standing for everything), in order, without repeats.
        self._pending: dict[str, None] = {}
        self._sending = asyncio.Lock()
        self._retrying: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    @property
    def pending(self) -> int:
        """Announcements waiting for Redis (digests and user ids)."""
        return len(self._pending)

    async def start(self, listener: RevocationListener) -> None:
        """Listen, telling `listener` of what is heard from now on. It is given here, not at
        construction: the live engine it ends subscriptions on runs the resolvers, which reach
        these revocations, so it is built after them (composition.assemble)."""
        self._listener = listener
        self._tasks = [
            asyncio.create_task(self._listen(), name="revocations-listener"),
            asyncio.create_task(self._beat(), name="revocations-heartbeat"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        retrying, self._retrying = self._retrying, None
        await cancel_and_wait(tasks + ([retrying] if retrying is not None else []))
        if self._pending:  # one last try, briefly: shutdown must not hang on Redis
            try:
                async with asyncio.timeout(SHUTDOWN_SECONDS):
                    await self._send_pending()
            except Exception as error:
                logger.debug("The last try failed (%s)", type(error).__name__)
            if self._pending:
                logger.error(
                    "Shutting down with %d revocations Redis never took (%s); other processes "
                    "drop those cached viewers within %.0f s at most",
                    len(self._pending),
                    ", ".join(list(self._pending)[:5]),
                    ENTRY_SECONDS,
                )
        self._cache.lapse()

    async def revoke(self, digest: str | Sequence[str], delete: Callable[[], Awaitable[None]]) -> None:
        """Delete the tokens with `delete`; once this returns, no process accepts them (see
        the module's docstring for the one exception)."""
        digests = [digest] if isinstance(digest, str) else list(digest)
        await self._revoke("revoke " + " ".join(digests), [f"revoke {d}" for d in digests], delete)

    async def revoke_user(self, user_id: int, delete: Callable[[], Awaitable[None]]) -> None:
        """Delete every token of the user with `delete`; once this returns, no process accepts one."""
        message = f"revoke-user {int(user_id)}"
        await self._revoke(message, [message], delete)

    async def forget_user(self, user_id: int) -> None:
        """Every process forgets the user's cached viewers (their profile changed), ending
        nothing. Best effort: a process that misses it re-reads within ENTRY_SECONDS."""
        message = f"forget-user {int(user_id)}"
        self._heard_revocation(message)
        if self._shared and self.running:
            try:
                async with asyncio.timeout(ANNOUNCE_SECONDS):
                    await self._broadcast.publish(self._channel, message)
            except Exception as error:
                logger.warning("Announcing a profile change failed (%s)", type(error).__name__)

    async def _revoke(self, message: str, items: list[str], delete: Callable[[], Awaitable[None]]) -> None:
        await delete()  # the record: while Postgres fails, this fails and nothing is revoked
        if not self.running:
            return  # no process of this deployment caches viewers
        self._heard_revocation(message)  # this process: cached viewers go, subscriptions end
        if not self._shared:
            return
        # Queued before anything is awaited: a caller cancelled from here on (its client gone)
        # leaves the announcement to the retry, never to nobody.
        self._queue(items)
        try:
            async with asyncio.timeout(ANNOUNCE_SECONDS):
                delay = RETRY_FIRST
                while not await self._send_pending():
                    await asyncio.sleep(delay)
                    delay = min(RETRY_MOST, delay * 2)
        except TimeoutError:
            logger.warning("Redis has not taken a revocation; it is retried in the background")
        finally:
            if self._pending:
                self._retry_soon()
        await asyncio.sleep(LEASE_SECONDS + MARGIN_SECONDS)

    def _queue(self, items: list[str]) -> None:
        if RESYNC in self._pending:
            return  # a RESYNC not yet sent is sent after this delete: it covers these tokens
        for item in items:
            self._pending[item] = None
        if len(self._pending) > MAX_PENDING:
            logger.error("%d revocations wait for Redis; one resync of every process stands for them", MAX_PENDING)
            self._pending = {RESYNC: None}

    async def _send_pending(self) -> bool:
        """Publish what waits; True once nothing does. What one publish carries leaves the
        queue before it is sent (an item queued meanwhile waits for the next), and comes back
        if it fails."""
        async with self._sending:
            while self._pending:
                batch = _next_batch(self._pending)
                for item in batch:
                    del self._pending[item]
                try:
                    async with asyncio.timeout(ANNOUNCE_SECONDS):
                        await self._broadcast.publish(self._channel, _message(batch))
                except BaseException as error:
                    self._queue(batch)
                    if not isinstance(error, Exception):
                        raise
                    logger.warning("Announcing a revocation failed (%s)", type(error).__name__)
                    return False
            return True

    def _retry_soon(self) -> None:
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry(), name="revocations-retry")

    async def _retry(self) -> None:
        delay = RETRY_FIRST
        while self._pending:
            await asyncio.sleep(delay)
            delay = min(RETRY_MOST, delay * 2)
            if await self._send_pending():
                logger.warning("Revocations that Redis had refused were announced on a retry")

    async def _listen(self) -> None:
        while True:
            try:
                # Revocations first: a beat heard must never precede the subscription to them.
                async with self._broadcast.subscribe_many(self._channel, self._beat_channel) as subscriber:
                    async for event in subscriber:
                        if event is not None:
                            self._hear(event.channel, event.message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("The revocation listener failed; restarting it")
            self._cache.lapse()
            self._listener.resync()  # what was announced meanwhile is lost
            await asyncio.sleep(BEAT_SECONDS)

    def _hear(self, channel: str, message: str) -> None:
        if message == RESYNC:
            self._cache.clear()
            if channel == self._channel:
                self._listener.resync()
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
            self._listener.user_revoked(user_id)
        elif kind == "forget-user" and rest.isdigit():
            self._cache.revoke_user(int(rest))

    def _revoked(self, digest: str) -> None:
        self._cache.revoke(digest)
        self._listener.token_revoked(digest)

    async def _beat(self) -> None:
        while True:
            sent = time.monotonic()
            try:
                async with asyncio.timeout(LEASE_SECONDS):
                    await self._broadcast.publish(self._beat_channel, repr(sent))
            except Exception as error:  # the lease lapses; Redis's own outage is logged by its backend
                logger.debug("Heartbeat not sent (%s)", type(error).__name__)
            await asyncio.sleep(BEAT_SECONDS)


def _next_batch(pending: dict[str, None]) -> list[str]:
    """The first item, with the digests after it when it is a digest (up to DIGESTS_PER_MESSAGE):
    what one announcement carries."""
    first = next(iter(pending))
    if not first.startswith("revoke "):
        return [first]
    batch = [item for item in pending if item.startswith("revoke ")]
    return batch[:DIGESTS_PER_MESSAGE]


def _message(batch: list[str]) -> str:
    if len(batch) == 1:
        return batch[0]
    return "revoke " + " ".join(item.removeprefix("revoke ") for item in batch)
