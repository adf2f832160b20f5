"""Background tasks stop for sure, though a library may drop a cancellation.

On Python 3.11 redis-py's commands can swallow a cancel that lands as a socket write completes
(`asyncio.wait_for`, gh-86296): a task cancelled once goes on with its loop, and a worker's stop
waited for it until gunicorn's kill at the graceful timeout (CI: shutdowns of 20 s)."""

from __future__ import annotations

import asyncio
import random
import uuid

from core.cancelling import cancel_and_wait
from core.redis_clients import create_redis
from tests.support.processes import SHARED_REDIS_URL


async def test_a_task_that_swallows_a_cancel_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0
    started = asyncio.Event()

    async def stubborn() -> None:
        nonlocal swallowed
        started.set()
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                if swallowed < 3:
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await started.wait()  # inside its loop: each cancel lands in its sleep
    async with asyncio.timeout(2):
        await cancel_and_wait([task])
    assert task.cancelled() and swallowed == 3


async def test_a_task_that_failed_or_finished_is_waited_for_without_raising() -> None:
    async def fails() -> None:
        raise ValueError("its own")

    failed, finished = asyncio.create_task(fails()), asyncio.create_task(asyncio.sleep(0))
    await asyncio.wait([failed, finished])  # both over before cancel_and_wait sees them
    await cancel_and_wait([failed, finished])
    assert isinstance(failed.exception(), ValueError) and finished.done() and not finished.cancelled()


async def test_loops_publishing_to_redis_end_however_their_cancel_lands() -> None:
    """As the revocation heartbeat and presence announcements do: cancelled at random points of
    a PUBLISH, every one ends (cancelled once, about a third of them would not)."""
    redis = create_redis(SHARED_REDIS_URL)
    channel = f"test-{uuid.uuid4().hex[:10]}:cancelling"
    published = 0

    async def beat() -> None:
        nonlocal published
        while True:
            await redis.publish(channel, "beat")
            published += 1
            await asyncio.sleep(0.001)

    try:
        for _ in range(150):
            task = asyncio.create_task(beat())
            await asyncio.sleep(random.uniform(0, 0.003))
            async with asyncio.timeout(2):
                await cancel_and_wait([task])
            assert task.cancelled()
        assert published > 0
    finally:
        await redis.aclose()
