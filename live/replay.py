"""A per-user budget for resumes that the live engine cannot serve from shared results.

A resume from an old cursor executes the subscriber's selection once per historical event: the
feed's last events come with the results it delivered (shared with every subscriber of the same
selection), older ones are read from the log and executed for this subscriber alone. Those
executions count against the user's budget, `count` per `seconds` in fixed windows, shared by
every worker and dyno through Redis (this process's memory without it, or while Redis fails).
Past it the resume is paced, not refused: it waits for the next window, so an honest client far
behind still gets everything, gap-free, and a loop of subscribe/unsubscribe from cursor 0 gets
no more replayed per window than the budget, however many times it starts again.
"""

from __future__ import annotations

import asyncio
import time

from limits.rate import RateLimiter

CHUNK = 25  # executions taken from the budget at a time (one Redis round trip each)


class _Batch:
    """The takes of one user that go to the limiter as one `spend` (see ReplayBudget.take)."""

    __slots__ = ("spent", "total")

    def __init__(self) -> None:
        self.total = 0
        self.spent: asyncio.Task[tuple[int, float]] | None = None


class ReplayBudget:
    """A fixed-window count per user, kept by the rate limiter (its Redis, its memory fallback,
    its breaker), under `replay:<user>` rather than a limit's name: a budget paces, it does not
    refuse.

    A user's takes that arrive together go to the limiter as one round trip, as if made one
    after the other: when a group of one user's subscribers falls behind and its thousands of
    subscribers start catching up at once, each of them would otherwise hold a Redis call of its
    own (with the breaker's task and timeout), queued on the bounded pool, all at the same time."""

    def __init__(self, limiter: RateLimiter, count: int, seconds: float) -> None:
        self._limiter = limiter
        self.count = count
        self.seconds = seconds
        # The batch still taking joiners, per user: only while its round trip has not started
        # (one turn of the event loop), so at most one entry per user with a take in progress.
        self._open: dict[int, _Batch] = {}

    async def take(self, user: int, executions: int) -> float:
        """Count `executions` for `user`: 0 when they fit this window, else the seconds until
        the next window (when the caller tries again)."""
        batch = self._open.get(user)
        if batch is None:
            batch = self._open[user] = _Batch()
            # Starts after the takes already scheduled for this turn of the loop: they join it.
            batch.spent = asyncio.ensure_future(self._spend(user, batch))
        batch.total += executions
        position = batch.total  # this take's share ends here, in the order they joined
        assert batch.spent is not None
        # Shielded: a caller that goes away (its subscriber closed) leaves the others' round trip.
        spent, ends = await asyncio.shield(batch.spent)
        if spent - batch.total + position <= self.count:
            return 0.0
        return max(0.01, ends - time.time())

    async def _spend(self, user: int, batch: _Batch) -> tuple[int, float]:
        if self._open.get(user) is batch:
            del self._open[user]  # closed: `total` is final
        return await self._limiter.spend(f"replay:{user}", batch.total, self.seconds, time.time())


class Allowance:
    """One resume's executions, taken from its user's budget a chunk at a time."""

    __slots__ = ("_budget", "_left", "_user")

    def __init__(self, budget: ReplayBudget | None, user: int) -> None:
        self._budget = budget
        self._user = user
        self._left = 0

    async def ensure(self) -> None:
        """Returns once at least one execution is allowed (waiting out spent windows)."""
        budget = self._budget
        if budget is None or self._left > 0:
            return
        chunk = min(CHUNK, max(1, budget.count))
        while True:
            wait = await budget.take(self._user, chunk)
            if wait <= 0:
                break
            await asyncio.sleep(wait)  # the next window: a time, not a condition to wait on
        self._left = chunk

    async def spend(self) -> None:
        await self.ensure()
        self._left -= 1
