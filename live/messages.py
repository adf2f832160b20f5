"""What a topic's messages look like on the broadcast: the one place that writes and reads them.

- An event: the event itself as a JSON object (a logged topic's carries its `seq`), with the
  time it was published (`published_at`) and its publish span's context (`trace_parent`).
- An end: `{"control": "end", "user": <id>, "error": <formatted error>}`: that user's
  subscriptions to the topic end with that error (a member left). No log holds it.
- A resync: `RESYNC`, which no publisher sends: the broadcast puts it on a channel when what was
  said on it may have been lost (Redis reconnected, a reader fell too far behind). It is defined
  beside the Redis backend (core.redis_backend), which cannot import the live engine, as the
  transport-level marker it is; it is read here like every other message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from core.redis_backend import RESYNC
from live.source import Event

CONTROL = "control"

__all__ = ["CONTROL", "RESYNC", "End", "Resync", "end", "event", "read"]


@dataclass(frozen=True, slots=True)
class End:
    """End `user`'s subscriptions to the topic with `error` (formatted)."""

    user: int
    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resync:
    """What was said on the topic meanwhile may be lost: re-read it, and re-check subscribers."""


# Put on every event by its publisher: when it was published (seconds since the epoch), for
# chat.delivery.latency. Subscribers' selections never read it.
PUBLISHED_AT = "@at"
# And the W3C traceparent of its publish span, when it was traced.
TRACEPARENT = "@tp"


def event(value: Event, traceparent: str | None = None) -> str:
    stamped = {**value, PUBLISHED_AT: time.time()}
    if traceparent is not None:
        stamped[TRACEPARENT] = traceparent
    return orjson.dumps(stamped).decode()


def trace_parent(value: Event) -> str | None:
    """The traceparent of a live event's publish span; None when it was not traced."""
    return value.get(TRACEPARENT)


def published_at(value: Event) -> float | None:
    """When a live event was published; None for one read from the log."""
    return value.get(PUBLISHED_AT)


def end(user: int, error: dict[str, Any]) -> str:
    return orjson.dumps({CONTROL: "end", "user": user, "error": error}).decode()


def read(message: str) -> Event | End | Resync:
    if message == RESYNC:
        return Resync()
    decoded = orjson.loads(message)
    if decoded.get(CONTROL) == "end":
        return End(decoded["user"], decoded["error"])
    return decoded
