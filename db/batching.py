"""Reads that many coroutines ask for at once, done in as few queries as the load allows.

aiodataloader batches only what is asked within one turn of the event loop. A reconnect storm
asks over many turns: here, while one batch's query runs, every key asked for meanwhile waits,
and they all go together in the next query (group commit), so the batch grows with the load and
the pool sees `concurrency` queries at most. Equal keys share one answer. The wait is bounded:
past `max_pending` keys a caller is refused at once with SERVICE_UNAVAILABLE instead of queueing
for ever behind the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from core.errors import ServiceUnavailable

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

logger = logging.getLogger("chat.batching")


class GroupedLoader(Generic[K, V]):
    def __init__(
        self,
        load_many: Callable[[list[K]], Awaitable[dict[K, V]]],
        *,
        name: str,
        max_pending: int = 10_000,
        max_batch: int = 500,
        concurrency: int = 1,
    ) -> None:
        self._load_many = load_many
        self._name = name
        self.max_pending = max_pending
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._waiting: dict[K, asyncio.Future[V]] = {}
        self._drains: set[asyncio.Task[None]] = set()
        # Counted by the drains themselves, not by their tasks' done callbacks: a callback runs a
        # turn after its drain stopped looking, and a key asked for in between would wait forever.
        self._draining = 0

    async def load(self, key: K) -> V:
        future = self._waiting.get(key)
        if future is None:
            if len(self._waiting) >= self.max_pending:
                raise ServiceUnavailable("The server is busy; try again shortly.")
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
            if self._draining < self._concurrency:
                self._draining += 1
                task = asyncio.create_task(self._drain(), name=f"batch-{self._name}")
                self._drains.add(task)  # a reference until it is done
                task.add_done_callback(self._drains.discard)
        # Shielded: a caller that gives up must not cancel the answer others share.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            await self._drain_waiting()
        finally:
            self._draining -= 1  # with nothing waiting: no await between the last look and here

    async def _drain_waiting(self) -> None:
        while self._waiting:
            keys = list(self._waiting)[: self._max_batch]
            futures = [self._waiting.pop(key) for key in keys]
            try:
                found = await self._load_many(keys)
            except asyncio.CancelledError:
                for future in futures:
                    future.cancel()
                raise
            except Exception as error:
                failure = _failure(error, self._name)
                for future in futures:
                    if not future.done():
                        future.set_exception(failure())
                continue
            for key, future in zip(keys, futures, strict=True):
                if not future.done():
                    future.set_result(found[key])


def _failure(error: Exception, name: str) -> Callable[[], Exception]:
    """A fresh exception for each waiter: one instance raised in many places would gather every
    one of their tracebacks."""
    if isinstance(error, ServiceUnavailable):
        message = error.message
        return lambda: ServiceUnavailable(message)
    logger.error("Batched %s read failed", name, exc_info=error)

    def failure() -> Exception:
        fresh = RuntimeError(f"Batched {name} read failed: {type(error).__name__}")
        fresh.__cause__ = error
        return fresh

    return failure
