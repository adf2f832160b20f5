"""The grouped loader behind subscription checks: every key asked for is answered, however the
askers' turns fall around a batch that is finishing (a reconnect storm asks all the time)."""

from __future__ import annotations

import asyncio
import random

import pytest

from core.errors import ServiceUnavailable
from db.batching import GroupedLoader


async def test_every_key_is_answered_when_asked_for_around_the_end_of_a_batch() -> None:
    batches: list[list[int]] = []

    async def load_many(keys: list[int]) -> dict[int, int]:
        """Answers at once (a batch can end in the turn it began, with askers already queued)."""
        batches.append(keys)
        return {key: key * 2 for key in keys}

    loader: GroupedLoader[int, int] = GroupedLoader(load_many, name="test")
    rng = random.Random(7)

    async def ask(key: int) -> int:
        for _ in range(rng.randrange(6)):  # land on every possible turn
            await asyncio.sleep(0)
        return await loader.load(key)

    async with asyncio.timeout(10):
        answers = await asyncio.gather(*(ask(key) for key in range(3000)))
    assert answers == [key * 2 for key in range(3000)]
    assert len(batches) < 3000  # grouped: several keys a query
    assert sorted(key for batch in batches for key in batch) == list(range(3000))


async def test_equal_keys_share_one_read_and_a_full_queue_refuses() -> None:
    reads: list[list[str]] = []
    release = asyncio.Event()

    async def load_many(keys: list[str]) -> dict[str, str]:
        reads.append(keys)
        await release.wait()
        return {key: key.upper() for key in keys}

    loader: GroupedLoader[str, str] = GroupedLoader(load_many, name="test", max_pending=2)
    first = asyncio.ensure_future(loader.load("a"))
    await asyncio.sleep(0)  # "a" is being read; the next keys wait for the next batch
    waiting = [asyncio.ensure_future(loader.load(key)) for key in ("b", "b", "c")]
    await asyncio.sleep(0)
    with pytest.raises(ServiceUnavailable):
        await loader.load("d")  # two distinct keys wait already
    release.set()
    assert await first == "A"
    assert await asyncio.gather(*waiting) == ["B", "B", "C"]
    assert reads == [["a"], ["b", "c"]]
