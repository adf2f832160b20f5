"""The in-memory rate limiter (no Redis, or Redis down): filling its table through one limit must
not reset another's counters, while windows that have ended are forgotten. And Redis that
answers nothing (paused): the breaker bounds each call and skips Redis for a back-off, the
limiter counts in memory meanwhile and in Redis again after."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from core.redis_clients import RedisBreaker, RedisUnavailable, create_redis
from core.settings import Rate
from limits.rate import MEMORY_ENTRIES, PRUNE_SECONDS, RateLimited, RateLimiter
from live.replay import ReplayBudget
from tests.support.processes import PrivateRedis

# A day's window: a fixed window that ended during the test would forget the cap it checks.
SIGN_IN = Rate(3, 86_400.0)
MESSAGES = Rate(1_000_000, 10.0)
POLL = Rate(1_000_000, 86_400.0)


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


# --- Redis that answers nothing: the breaker, and the limiter against a paused redis-server ------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def hang() -> None:
    await asyncio.get_running_loop().create_future()


async def test_the_breaker_bounds_a_call_then_skips_redis_for_its_backoff_then_tries_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    breaker = RedisBreaker(timeout=0.1, backoff=2.0, clock=clock)
    asked = 0

    async def hung() -> None:
        nonlocal asked
        asked += 1
        await hang()

    with caplog.at_level(logging.WARNING, logger="chat.redis"):
        # A burst while Redis hangs: each call returns at the timeout, one warning for them all.
        async with asyncio.timeout(5):
            outcomes = await asyncio.gather(*(breaker.call(hung) for _ in range(20)), return_exceptions=True)
        assert all(isinstance(outcome, RedisUnavailable) for outcome in outcomes) and asked == 20
        assert breaker.open
        # During the back-off nothing asks Redis: every call falls back at once.
        for _ in range(100):
            with pytest.raises(RedisUnavailable):
                await breaker.call(hung)
        assert asked == 20
        # After it, one call tries Redis; the others still fall back while it is out.
        clock.now += 2.1
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def answers() -> str:
            nonlocal asked
            asked += 1
            return await answer

        probe = asyncio.ensure_future(breaker.call(answers))
        await asyncio.sleep(0)
        with pytest.raises(RedisUnavailable):
            await breaker.call(answers)
        answer.set_result("PONG")
        assert await probe == "PONG" and not breaker.open
        assert asked == 21  # the try alone asked Redis
        assert await breaker.call(answers) == "PONG"  # closed again: every call asks Redis
    warnings = [record.getMessage() for record in caplog.records if record.name == "chat.redis"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("Redis failed (TimeoutError") and warnings[1].startswith("Redis answers again")


async def test_a_failed_try_after_the_backoff_opens_it_again_and_logs_once() -> None:
    clock = Clock()
    breaker = RedisBreaker(timeout=5.0, backoff=2.0, clock=clock)

    async def refused() -> None:
        raise RedisConnectionError("Connection refused")

    for _ in range(3):
        with pytest.raises(RedisUnavailable):
            await breaker.call(refused)  # refused at once: no waiting out the timeout
        assert breaker.open
        clock.now += 2.1


@pytest.fixture
def paused_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


async def test_the_limiter_counts_in_memory_while_redis_hangs_and_in_redis_again_after(
    paused_redis: PrivateRedis,
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    client = create_redis(paused_redis.url)
    limiter = RateLimiter(client, prefix, RedisBreaker(timeout=0.2, backoff=0.5))
    name = f"{prefix}rate:auth:k:{int(time.time() // SIGN_IN.seconds)}"
    try:
        await limiter.check("auth", "k", SIGN_IN)
        assert paused_redis.cli("get", name).strip() == "1"
        paused_redis.pause()
        async with asyncio.timeout(5):  # answered, from this process's memory
            for _ in range(SIGN_IN.count):
                await limiter.check("auth", "k", SIGN_IN)
            with pytest.raises(RateLimited):  # and the limit still holds, here
                await limiter.check("auth", "k", SIGN_IN)
        paused_redis.resume()
        # Counted in Redis again once the back-off is over (polled, with a deadline).
        deadline = time.monotonic() + 20
        fresh = f"{prefix}rate:poll:fresh:{int(time.time() // POLL.seconds)}"
        while not paused_redis.cli("get", fresh).strip():
            assert time.monotonic() < deadline, "never counted in Redis again"
            await limiter.check("poll", "fresh", POLL)
            await asyncio.sleep(0.05)
        # The shared count goes on from what Redis held (the hit that timed out may have landed).
        held = int(paused_redis.cli("get", name))
        assert held in (1, 2)
        for _ in range(SIGN_IN.count - held):
            await limiter.check("auth", "k", SIGN_IN)
        with pytest.raises(RateLimited):
            await limiter.check("auth", "k", SIGN_IN)
        assert int(paused_redis.cli("get", name)) == SIGN_IN.count + 1
    finally:
        paused_redis.resume()
        await client.aclose()


async def test_the_replay_budget_is_a_window_of_the_limiter() -> None:
    budget = ReplayBudget(RateLimiter(None, f"test-{uuid.uuid4().hex[:8]}:"), 5, 86_400.0)
    assert await budget.take(1, 3) == 0
    assert await budget.take(2, 5) == 0  # each user has their own
    assert await budget.take(1, 3) > 0  # 6 of 5: wait for the next window


class CountingLimiter(RateLimiter):
    """The in-memory limiter, counting its round trips."""

    def __init__(self) -> None:
        super().__init__(None, f"test-{uuid.uuid4().hex[:8]}:")
        self.spends: list[tuple[str, int]] = []

    async def spend(self, name: str, amount: int, seconds: float, now: float) -> tuple[int, float]:
        self.spends.append((name, amount))
        return await super().spend(name, amount, seconds, now)


async def test_one_users_concurrent_replay_takes_are_one_round_trip_counted_in_order() -> None:
    """Thousands of one user's subscribers catching up at once: one spend, not one each, and
    each take answered as if they had been made one after the other."""
    limiter = CountingLimiter()
    budget = ReplayBudget(limiter, 10, 86_400.0)
    waits = await asyncio.gather(*(budget.take(1, 3) for _ in range(5)), budget.take(2, 4))
    assert [wait == 0 for wait in waits] == [True, True, True, False, False, True]  # 3, 6, 9, 12, 15 of 10
    assert sorted(limiter.spends) == [("replay:1", 15), ("replay:2", 4)]
    assert await budget.take(1, 1) > 0  # the window holds all 15
    assert limiter.spends[-1] == ("replay:1", 1)


async def test_a_replay_take_whose_caller_goes_away_still_counts_for_the_others() -> None:
    limiter = CountingLimiter()
    budget = ReplayBudget(limiter, 10, 86_400.0)
    leaving = asyncio.ensure_future(budget.take(1, 8))
    staying = asyncio.ensure_future(budget.take(1, 2))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == 0
    assert limiter.spends == [("replay:1", 10)]
    assert leaving.cancelled()


async def test_a_call_that_always_tries_is_asked_while_open_and_its_answer_closes_it() -> None:
    """A publish: skipped once Redis is back, its event would reach no other process."""
    clock = Clock()
    breaker = RedisBreaker(timeout=0.1, backoff=2.0, clock=clock)
    with pytest.raises(RedisUnavailable):
        await breaker.call(hang)
    assert breaker.open

    async def pong() -> str:
        return "PONG"

    with pytest.raises(RedisUnavailable):
        await breaker.call(pong)  # skipped: the back-off is not over
    assert await breaker.call(pong, always_try=True) == "PONG"
    assert not breaker.open and await breaker.call(pong) == "PONG"
