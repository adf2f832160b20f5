"""Each process remembers which user a token belongs to, so an HTTP request needs no database
read to know its viewer (that read was half of a plain query's server CPU).

A remembered token may only be trusted while the process is sure it would have heard of that
token's revocation: `identity.revocations` renews a lease each time the process hears its own
heartbeat come back over the revocation channel, and a logOut waits out one lease after it
announced the revocation (or gave up announcing it). Without a live lease nothing is trusted,
and the cache empties: what it held is never trusted again once its lease has lapsed.
Nor is an entry trusted past its token's expiry as last read (a renewal elsewhere is seen at
the next read).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from identity.auth import DEFAULT_POLICY, TOKEN, TokenPolicy, Viewer

MAX_ENTRIES = 20_000
# A backstop only: revocations, not age, are what ends an entry.
ENTRY_SECONDS = 300.0


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class ViewerCache:
    def __init__(
        self, max_entries: int = MAX_ENTRIES, entry_seconds: float = ENTRY_SECONDS, policy: TokenPolicy = DEFAULT_POLICY
    ) -> None:
        self.policy = policy
        self._entries: dict[str, tuple[Viewer, float]] = {}
        self._max_entries = max_entries
        self._entry_seconds = entry_seconds
        self._lease_until = 0.0
        # Bumped by every revocation and clear: a lookup that read the database before one of
        # those must not store what it read.
        self.epoch = 0
        self.stats = CacheStats()

    @property
    def live(self) -> bool:
        return time.monotonic() < self._lease_until

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> Viewer | None:
        now = time.monotonic()
        if now >= self._lease_until:
            if self._entries:
                self.clear()
            return None
        entry = self._entries.get(digest)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def put(self, digest: str, viewer: Viewer, epoch: int) -> None:
        now = time.monotonic()
        if epoch != self.epoch or now >= self._lease_until:
            return
        # Not past the token's expiry, nor past when its renewal falls due (a read then renews
        # it): a monotonic deadline for the wall-clock one.
        expires_at = getattr(viewer, "expires_at", math.inf)
        if self.policy.renew_seconds > 0 and getattr(viewer, "kind", TOKEN) == TOKEN:
            expires_at -= self.policy.ttl_seconds - self.policy.renew_seconds
        remaining = expires_at - time.time()
        if remaining <= 0:
            return
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[digest] = (viewer, now + min(self._entry_seconds, remaining))

    def revoke(self, digest: str) -> None:
        self._entries.pop(digest, None)
        self.epoch += 1

    def revoke_user(self, user_id: int) -> None:
        """Every token of the user (a rare event: a scan of the entries is fine)."""
        for digest in [d for d, (viewer, _) in self._entries.items() if viewer.id == user_id]:
            del self._entries[digest]
        self.epoch += 1

    def clear(self) -> None:
        self._entries.clear()
        self.epoch += 1

    def renew(self, until: float) -> None:
        """A beat heard. After a lapse the cache starts empty and lookups under way store
        nothing: what they read may predate a revocation announced while this process heard
        nothing (identity.revocations)."""
        if time.monotonic() >= self._lease_until:
            self.clear()
        self._lease_until = max(self._lease_until, until)

    def lapse(self) -> None:
        self._lease_until = 0.0
        self.clear()
