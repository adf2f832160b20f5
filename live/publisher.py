"""Putting a topic's events on the broadcast, after the change they announce has committed.

Postgres is the record: a failed publish is logged, never the caller's error. A logged topic's
subscribers find the event in the log on their next event or after Redis reconnects; an
ephemeral one's next change tells them the state anew.

An end (a member left: their subscriptions to the topic must stop) is no event in any log, so
a failed one is not left at that: this process's own subscribers get it at once, and the
publish is retried with backoff until Redis takes it (for END_RETRY_SECONDS), so every other
process ends its subscribers too once Redis answers again. A Redis outage that drops the
pub/sub connections also makes every feed re-check its subscriptions when it is back
(live.feed); the retry covers what does not drop them (a Redis paused, or refusing
commands, a publishing connection lost alone).

The caller (a mutation) waits for a publish at most REDIS_COMMAND_TIMEOUT, through the process's
breaker (redis_client.RedisBreaker): a paused Redis fails it then, as a refused one does. A publish
is tried even while the breaker is open (an event skipped once Redis is back would reach no other
process until the next one), and its answer closes the breaker for the other calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from core.broadcast import ChannelBroadcast
from core.cancelling import cancel_and_wait
from core.redis_clients import RedisBreaker, RedisUnavailable
from live import messages
from telemetry import traces

logger = logging.getLogger("chat.publish")

END_RETRY_SECONDS = 120.0
RETRY_FIRST, RETRY_MOST = 0.1, 2.0


class Publisher:
    def __init__(
        self,
        broadcast: ChannelBroadcast,
        channel_prefix: str,
        breaker: RedisBreaker | None = None,
        observer: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._broadcast = broadcast
        self._prefix = channel_prefix
        self._breaker = breaker
        # Told of every event published, before the broadcast is (the webhooks' doorbell): it
        # must not block nor raise.
        self._observer = observer
        self._retries: set[asyncio.Task[Any]] = set()

    async def event(self, topic: str, event: dict[str, Any]) -> None:
        """An event of `topic` (with its `seq` when the topic is logged)."""
        if self._observer is not None:
            self._observer(topic, event)
        with traces.publishing() as published:  # a span after commit, its context in the message
            await self._publish(topic, messages.event(event, published.traceparent if published else None))

    async def end(self, topic: str, *, user: int, error: dict[str, Any]) -> None:
        """End `user`'s subscriptions to `topic` with `error` (formatted), e.g. when they leave.
        Takes effect even when the publish fails (see the module's docstring)."""
        message = messages.end(user, error)
        if await self._publish(topic, message):
            return
        self._broadcast.deliver_locally(self._prefix + topic, message)
        task = asyncio.ensure_future(self._retry(topic, message))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def close(self) -> None:
        await cancel_and_wait(self._retries)

    async def _retry(self, topic: str, message: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + END_RETRY_SECONDS
        delay = RETRY_FIRST
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(RETRY_MOST, delay * 2)
            try:
                await self._broadcast.publish(self._prefix + topic, message)
            except Exception as error:
                logger.warning("Retrying an end on %s failed (%s)", topic, type(error).__name__)
            else:
                logger.warning("An end on %s was published on a retry", topic)
                return
        logger.error("Gave up publishing an end on %s after %.0f s", topic, END_RETRY_SECONDS)

    async def _publish(self, topic: str, message: str) -> bool:
        channel = self._prefix + topic
        try:
            if self._breaker is None:
                await self._broadcast.publish(channel, message)
            else:
                await self._breaker.call(lambda: self._broadcast.publish(channel, message), always_try=True)
        except RedisUnavailable:  # the breaker logs, once per back-off
            return False
        except Exception:
            logger.exception("Publishing to %s failed", topic)
            return False
        return True
