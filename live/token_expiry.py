"""Live subscriptions end when their token expires, as they end when it is revoked.

A revocation is announced (identity/revocations.py); an expiry is not: nothing happens at the
moment a token runs out. So each process looks, every `interval` seconds, at the tokens its
live subscriptions hold whose expiry (as last read) has passed, reads those again in one batch
(use elsewhere may have renewed them), and ends the subscriptions of each token that is gone.
A subscription thus outlives its token by at most one interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from graphql import GraphQLError

from core.cancelling import cancel_and_wait
from live.engine import Engine

logger = logging.getLogger("chat.token_expiry")

# digests -> each one's expiry (Unix time) if it is still valid, else None
ReadExpiries = Callable[[Sequence[str]], Awaitable[dict[str, float | None]]]


def interval_for(ttl_seconds: float) -> float:
    """A quarter of the token lifetime, between a quarter of a second and half a minute."""
    return min(30.0, max(0.25, ttl_seconds / 4))


class ExpiryWatch:
    def __init__(self, engine: Engine, read: ReadExpiries, error: GraphQLError, interval: float) -> None:
        self._engine = engine
        self._read = read
        self._error = error
        self.interval = interval
        # What a re-read found for a token still valid: its expiry then (renewed since it was held).
        self._known: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="token-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def due(self, now: float) -> list[str]:
        """The held tokens whose expiry, as last known, has passed."""
        due = []
        for digest, subscriptions in self._engine.by_token.items():
            expires_at = self._known.get(digest)
            if expires_at is None:
                expires_at = max((s.viewer.expires_at for s in subscriptions), default=float("inf"))
            if expires_at <= now:
                due.append(digest)
        return due

    async def check(self) -> None:
        now = time.time()
        self._known = {d: at for d, at in self._known.items() if d in self._engine.by_token}
        due = self.due(now)
        if not due:
            return
        for digest, expires_at in (await self._read(due)).items():
            if expires_at is None or expires_at <= now:
                self._known.pop(digest, None)
                self._engine.expire_token(digest, self._error)
            else:
                self._known[digest] = expires_at

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: the next round tries again
                logger.warning("Checking tokens for expiry failed (%s)", type(error).__name__)
