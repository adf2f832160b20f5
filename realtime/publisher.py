"""Putting a topic's events on the broadcast, after the change they announce has committed.

Postgres is the record: a failed publish is logged, never the caller's error. A logged topic's
subscribers find the event in the log on their next event or after Redis reconnects; an
ephemeral one's next change tells them the state anew.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from realtime.broadcast import ChannelBroadcast
from realtime.engine import CONTROL

logger = logging.getLogger("chat.publish")


class Publisher:
    def __init__(self, broadcast: ChannelBroadcast, channel_prefix: str) -> None:
        self._broadcast = broadcast
        self._prefix = channel_prefix

    async def event(self, topic: str, event: dict[str, Any]) -> None:
        """An event of `topic` (with its `seq` when the topic is logged)."""
        await self._publish(topic, event)

    async def end(self, topic: str, *, user: int, error: dict[str, Any]) -> None:
        """End `user`'s subscriptions to `topic` with `error` (formatted), e.g. when they leave."""
        await self._publish(topic, {CONTROL: "end", "user": user, "error": error})

    async def _publish(self, topic: str, message: dict[str, Any]) -> None:
        try:
            await self._broadcast.publish(self._prefix + topic, orjson.dumps(message).decode())
        except Exception:
            logger.exception("Publishing to %s failed", topic)
