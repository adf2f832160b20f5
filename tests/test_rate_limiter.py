"""The in-memory rate limiter (no Redis, or Redis down): filling its table through one limit must
not reset another's counters, while windows that have ended are forgotten."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from core.settings import Rate
from limits.rate import MEMORY_ENTRIES, PRUNE_SECONDS, RateLimited, RateLimiter

# A day's window: a fixed window that ended during the test would forget the cap it checks.
SIGN_IN = Rate(3, 86_400.0)
MESSAGES = Rate(1_000_000, 10.0)


async def test_many_keys_of_one_limit_do_not_reset_the_sign_in_limit() -> None:
    limiter = RateLimiter(None, f"test-{uuid.uuid4().hex[:8]}:")
    for _ in range(SIGN_IN.count):
        await limiter.check("auth", "203.0.113.7", SIGN_IN)  # at its cap
    for user in range(MEMORY_ENTRIES + 10):  # past the size that triggers pruning
        await limiter.check("messages", str(user), MESSAGES)
    with pytest.raises(RateLimited):
        await limiter.check("auth", "203.0.113.7", SIGN_IN)
    await limiter.check("messages", "0", MESSAGES)  # and the filling limit's own counters go on


async def test_windows_that_have_ended_are_forgotten() -> None:
    limiter = RateLimiter(None, f"test-{uuid.uuid4().hex[:8]}:")
    short = Rate(1_000, 0.2)
    for _ in range(SIGN_IN.count):
        await limiter.check("auth", "203.0.113.8", SIGN_IN)
    for user in range(MEMORY_ENTRIES + 10):
        await limiter.check("burst", str(user), short)
    await asyncio.sleep(max(short.seconds, PRUNE_SECONDS) + 0.1)  # every burst window has ended
    for user in range(MEMORY_ENTRIES + 10):  # past the size that triggers pruning again
        await limiter.check("messages", str(user), MESSAGES)
    # The ended burst windows are gone; what is left is exactly what is still counting.
    assert not [name for name in limiter._memory if ":burst:" in name]
    assert len(limiter._memory) == 1 + MEMORY_ENTRIES + 10
    with pytest.raises(RateLimited):
        await limiter.check("auth", "203.0.113.8", SIGN_IN)
