"""One subscriber of the live engine: an operation on one transport, and the sink its results
go out through (the transport frames them for its protocol)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from identity.auth import Viewer
from live.selection import GroupKey, Selection
from live.source import LiveSource
from telemetry import record

if TYPE_CHECKING:
    from live.engine import Engine
    from live.feed import Feed


class Sink(Protocol):
    """One operation's way to its client: a transport frames the results for its protocol."""

    @property
    def closed(self) -> bool: ...

    def send(self, payload: bytes, event_id: str | None) -> None:
        """A live result. A client that does not read them in time is disconnected."""

    def history(self, results: list[tuple[bytes, str | None]]) -> None:
        """Results we chose to send (a resume): not counted against the live bound; paced by
        awaiting `drained` before the next batch."""

    async def drained(self) -> None:
        """Returns once the transport has taken the history (or is gone)."""

    def end(self, payload: bytes) -> None:
        """A last result (its errors), then the operation's end."""

    def try_again_later(self) -> None:
        """The subscription cannot be served now: the transport ends so the client retries."""

    def token_expired(self, payload: bytes) -> None:
        """Its viewer's host JWT expired (payload: the error `end` would send): a transport whose
        client reconnects with a fresh token ends the connection so it does; others `end`."""


class Releasable(Protocol):
    def release(self) -> None: ...


class Subscription:
    """One subscriber: an operation on one transport."""

    __slots__ = (
        "catching_up",
        "counted",
        "engine",
        "feed",
        "kept",
        "key",
        "selection",
        "seq",
        "sink",
        "slot",
        "source",
    )

    def __init__(self, engine: Engine, source: LiveSource, selection: Selection, key: GroupKey, sink: Sink) -> None:
        self.engine = engine
        self.source = source
        self.selection = selection
        self.key = key
        self.sink = sink
        self.seq: int | None = source.after  # None until admitted to a logged feed: its head
        self.feed: Feed | None = None
        self.catching_up: asyncio.Task[None] | None = None
        self.slot: Releasable | None = None
        self.counted: tuple[str, str] | None = None  # its key among the active (telemetry.record)
        self.kept: tuple[int | None, bytes, str | None] | None = None  # a result to hand over (`keep`)

    def count(self, transport: str) -> None:
        """Counted among the active subscriptions until it closes (started once it runs)."""
        if self.feed is not None and self.counted is None:
            self.counted = record.subscription_started(self.selection.field, transport)

    def hold(self, slot: Releasable | None) -> None:
        """Its user's subscription slot (live.quota), given back when it closes."""
        if self.feed is None and slot is not None:
            slot.release()  # closed already
            return
        self.slot = slot

    @property
    def viewer(self) -> Viewer:
        return self.source.viewer

    def advance(self, seq: int) -> None:
        """Its position in a logged topic moves to `seq`: the events up to it are dealt with
        (their results handed to its sink, or passed over as not of its kinds)."""
        self.seq = seq

    def keep(self, seq: int | None, payload: bytes, event_id: str | None) -> None:
        """`deliver`, later: when `hand_over` is called, or before a later `deliver` or `end`
        (the order of its results stays theirs). Dropped if it closes meanwhile."""
        if self.kept is not None:
            self.hand_over()
        self.kept = (seq, payload, event_id)

    def hand_over(self) -> None:
        """The result it keeps, if any, delivered now (while it is still in its feed)."""
        kept, self.kept = self.kept, None
        if kept is not None and self.feed is not None:
            self._deliver(*kept)

    def deliver(self, seq: int | None, payload: bytes, event_id: str | None) -> None:
        if self.kept is not None:
            self.hand_over()
        self._deliver(seq, payload, event_id)

    def _deliver(self, seq: int | None, payload: bytes, event_id: str | None) -> None:
        if seq is not None:
            if self.seq is not None and seq <= self.seq:
                return
            self.seq = seq
        self.sink.send(payload, event_id)

    def close(self) -> None:
        """Stop delivering (the client stopped it, or it ended); safe to call twice."""
        task = self.catching_up
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.catching_up = None
        self.kept = None
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        if self.counted is not None:
            record.subscription_ended(self.counted)
            self.counted = None
        if self.feed is not None:
            self.feed.remove(self)
        self.engine.unindex(self)

    def end(self, payload: bytes) -> None:
        self.hand_over()
        self.close()
        self.sink.end(payload)
