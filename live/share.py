"""The process's share for background work (live delivery's backlogs, costly resumes), handed
out fairly between accounts: a user, or a selection several users share (live.selection.Group)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from live.selection import Group

# The share of the process's time that backlogs and costly resumes may take.
BACKGROUND_SHARE = 0.5
# Accounts (and selections' costs) remembered; past it they are forgotten all at once.
COSTS_KEPT = 4096
# How fast an account's use of the background share is forgotten (its half-life).
USAGE_HALF_LIFE_SECONDS = 10.0


class WorkShare:
    """At most `share` of the process's time for background work (backlogs, resumes from the
    log), handed out fairly between accounts.

    One piece at a time (so what runs between two pieces waits for one at most), from a bucket
    filled at `share` seconds a second, up to `burst`; work waits while it is empty and is
    charged what it took. Each piece is charged to an account (a user, or a selection shared by
    `weight` users, charged a `weight`th of it), and of the pieces waiting, the one whose account
    used the least lately (a use decays with USAGE_HALF_LIFE_SECONDS) goes next: however many
    pieces one user queues, anyone else's next piece waits for one of them at most."""

    def __init__(self, share: float = BACKGROUND_SHARE, burst: float = 0.1) -> None:
        self.share = share
        self.burst = burst
        self.level = burst
        self.at = time.monotonic()
        self._busy = False
        self._waiting: list[tuple[Hashable, asyncio.Future[None]]] = []
        self._usage: dict[Hashable, tuple[float, float]] = {}  # account: (use, when)

    def usage(self, account: Hashable) -> float:
        """An account's recent use of the share, in seconds (decayed)."""
        found = self._usage.get(account)
        if found is None:
            return 0.0
        used, at = found
        return used * 0.5 ** ((time.monotonic() - at) / USAGE_HALF_LIFE_SECONDS)

    @property
    def waiting(self) -> int:
        """Pieces waiting for their turn."""
        return len(self._waiting)

    def order(self, group: Group) -> float:
        return self.usage(group.account)

    def _charge(self, account: Hashable, seconds: float) -> None:
        if account not in self._usage and len(self._usage) >= COSTS_KEPT:
            self._usage.clear()
        self._usage[account] = (self.usage(account) + seconds, time.monotonic())

    @asynccontextmanager
    async def piece(self, account: Hashable = None, weight: int = 1) -> AsyncIterator[None]:
        if self._busy or self._waiting:
            waiter = asyncio.get_running_loop().create_future()
            entry = (account, waiter)
            self._waiting.append(entry)
            try:
                await waiter
            except BaseException:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                elif waiter.done() and not waiter.cancelled():
                    self._next()  # it was handed the turn: pass it on
                raise
        self._busy = True
        started = 0.0
        try:
            await self.turn()
            started = time.perf_counter()
            yield
        finally:
            if started:
                elapsed = time.perf_counter() - started
                self.spent(elapsed)
                self._charge(account, elapsed / weight)
            self._next()

    def _next(self) -> None:
        """The turn to the waiting piece whose account used the least, or to nobody."""
        self._busy = False
        self._waiting = [entry for entry in self._waiting if not entry[1].done()]  # cancelled ones
        if self._waiting:
            entry = min(self._waiting, key=lambda waiting: self.usage(waiting[0]))
            self._waiting.remove(entry)
            self._busy = True
            entry[1].set_result(None)

    def _fill(self) -> None:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.share)
        self.at = now

    async def turn(self) -> None:
        self._fill()
        while self.level <= 0:
            await asyncio.sleep(-self.level / self.share)  # the time the bucket takes to refill
            self._fill()

    def spent(self, seconds: float) -> None:
        self._fill()
        self.level -= seconds
