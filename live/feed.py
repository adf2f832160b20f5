"""One topic in this process: its broadcast subscription and its subscribers' groups.

A feed reads the topic's messages (live.messages) one at a time under its lock: an end ends the
subscriptions of the user it names; a resync re-checks every subscription (ends may have been
missed) after the feed's kind has caught up in its own way; an event is the kind's to deliver.
The kinds: `LoggedFeed` (live.logged: ordered, gap-filled, resumable), `StateFeed` (live.state:
a state re-read on change and expiry) and `PlainFeed` (below: each event as it comes). The
registry (live.engine) picks one by what the topic's source offers.

Delivering an event to a group executes its selection once per audience (live.selection) with
one set of loaders per viewer for all the groups, and hands every subscriber of the part the
same bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from core.cancelling import cancel_and_wait
from live import messages
from live.selection import Group, GroupKey, PayloadKey
from live.source import Event, LiveSource
from live.subscription import Subscription
from telemetry import record, traces

if TYPE_CHECKING:
    from identity.auth import Viewer
    from live.engine import Engine

logger = logging.getLogger("chat.live")


def by_charge(group: Group) -> float:
    return group.charge


class Feed:
    """One topic in this process: its broadcast subscription, its groups and its joining
    subscribers. Each kind of topic is a subclass; what differs is how a subscriber joins
    (`join`), what an event does (`_on_event`) and what a resync re-reads (`_on_resync`)."""

    def __init__(self, engine: Engine, source: LiveSource) -> None:
        self.engine = engine
        self.topic = source.topic
        self.groups: dict[GroupKey, Group] = {}
        self.joining: set[Subscription] = set()
        self.lock = asyncio.Lock()
        self._stack = AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self.started: asyncio.Future[None] | None = None
        self.retired = False
        # Results handed over and executions, since it started (a deliver span's counts).
        self.handed = self.executed = 0
        # While set, each subscriber keeps its result (Subscription.keep) and the subscriber
        # listed here, to be handed over by whoever set it (live.following).
        self.keeping: list[Subscription] | None = None
        # While set (under the lock), what the groups are handed of the event being delivered is
        # added up here, to be counted once for the event (record.Delivery), by whoever set it.
        self.delivery: record.Delivery | None = None

    @property
    def subscriptions(self) -> list[Subscription]:
        return [*self.joining, *(s for group in self.groups.values() for s in group.subscriptions)]

    async def start(self) -> None:
        channel = self.engine.channel(self.topic)
        subscriber = await self._stack.enter_async_context(
            self.engine.broadcast.subscribe(channel, bound=self.engine.feed_queue)
        )
        await self._subscribed()
        self._task = asyncio.create_task(self._run(subscriber), name=f"feed {self.topic}")

    async def _subscribed(self) -> None:
        """Run once the broadcast subscription is confirmed, before the first message is read."""

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self._stopped()
        await self._stack.aclose()

    async def _stopped(self) -> None:
        """Run once no message will be read any more, before the broadcast subscription ends."""

    def admit(self, subscription: Subscription) -> None:
        """From now on an end reaches it; it receives nothing until it is handed over."""
        subscription.feed = self
        self.joining.add(subscription)

    async def join(self, subscription: Subscription) -> None:
        """The admitted subscriber, checked, starts receiving (the engine calls this once)."""
        self._hand_over(subscription)

    def _hand_over(self, subscription: Subscription) -> None:
        self.joining.discard(subscription)
        subscription.catching_up = None
        group = self.groups.get(subscription.key)
        if group is None:
            audiences = self.engine.audiences(subscription.selection)
            cost = self.engine.costs.get(subscription.key, 0.0)
            group = self.groups[subscription.key] = Group(subscription, audiences, cost)
        group.add(subscription)
        # The group's one Selection and key: this subscriber's own copies of the query text and
        # variables go.
        subscription.selection = group.selection
        subscription.key = group.key

    def remove(self, subscription: Subscription) -> None:
        if subscription in self.joining:
            self.joining.discard(subscription)
        else:
            group = self.groups.get(subscription.key)
            if group is None or subscription not in group.subscriptions:
                return
            group.discard(subscription)
            if not group.subscriptions:
                del self.groups[subscription.key]
                self._forget(group)
        subscription.feed = None
        if not self.groups and not self.joining:
            self.engine.retire(self)

    def _forget(self, group: Group) -> None:
        """The group is gone from the feed."""

    async def _run(self, subscriber: Any) -> None:
        async for message in subscriber:
            try:
                async with self.lock:
                    await self._handle(message.message)
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the log unreachable while filling a gap: the next event retries
                logger.exception("Topic %s: delivering an event failed", self.topic)

    async def _handle(self, message: str) -> None:
        delivery = self.delivery = record.Delivery()
        try:
            await self._dispatch(messages.read(message))
        finally:
            self.delivery = None
            delivery.done()

    async def _dispatch(self, read: Event | messages.End | messages.Resync) -> None:
        if isinstance(read, messages.Resync):  # Redis came back: what was said meanwhile is lost to us
            await self._on_resync()
            self.engine.recheck(self.subscriptions)
        elif isinstance(read, messages.End):
            user = read.user
            self.engine.end_where(self.subscriptions, lambda s: s.viewer.id == user, read.error)
        elif (traceparent := messages.trace_parent(read)) is None:
            await self._on_event(read)
        else:
            handed, executed = self.handed, self.executed
            with traces.delivering(traceparent) as span:
                await self._on_event(read)
                traces.delivered(span, self.handed - handed, self.executed - executed)

    async def _on_resync(self) -> None:
        """Catch up with what may have been said while the broadcast was away."""

    async def _on_event(self, event: Event) -> None:
        await self._deliver(event)

    async def _deliver(self, event: Event) -> None:
        """The event to every group that wants it, the cheapest per user first."""
        payloads: dict[PayloadKey, bytes] = {}
        contexts: dict[Hashable, Any] = {}
        groups = self.groups.values()
        for group in sorted(groups, key=by_charge) if len(groups) > 1 else list(groups):
            if group.wants(event):
                await self._deliver_timed(group, event, None, payloads, contexts)

    async def _deliver_timed(
        self,
        group: Group,
        event: Event,
        seq: int | None,
        payloads: dict[PayloadKey, bytes],
        contexts: dict[Hashable, Any],
    ) -> float:
        """`_deliver_group`, its time measured into the group's cost (and the engine's): the
        seconds it took."""
        started = time.perf_counter()
        await self._deliver_group(group, event, seq, payloads, contexts, self.delivery)
        elapsed = time.perf_counter() - started
        self.engine.remember_cost(group.key, group.measured(elapsed))
        return elapsed

    async def _deliver_group(
        self,
        group: Group,
        event: Event,
        seq: int | None,
        payloads: dict[PayloadKey, bytes],
        contexts: dict[Hashable, Any],
        delivery: record.Delivery | None,
    ) -> None:
        """The group's result for each audience of the event (kept in `payloads`), to each of its
        subscribers still in this feed; `contexts`: the loaders of each viewer, shared by the
        event's groups (what one group read, the next finds loaded); `delivery`: where what it
        handed is added up for the event (None: counted on its own)."""
        event_id = group.event_id(event) if group.event_id is not None else None
        executions = handed = 0
        for audience, subscriptions in group.by_audience(event):
            viewer = subscriptions[0].viewer if audience else None
            shared = None if viewer is None else (viewer.id, viewer.token_hash)
            context = contexts.get(shared)
            if context is None:
                context = contexts[shared] = self._context(viewer)
            payload = payloads[(group.key, audience)] = await self.engine.execute(
                group.selection, viewer, event, context
            )
            executions += 1
            keeping = self.keeping
            for subscription in subscriptions:
                if subscription.feed is self:
                    if keeping is None:
                        subscription.deliver(seq, payload, event_id)
                    else:
                        subscription.keep(seq, payload, event_id)
                        keeping.append(subscription)
                    handed += 1
        if delivery is None:
            record.delivered(group.selection.field, handed, executions, messages.published_at(event))
        else:
            delivery.add(group.selection.field, handed, executions, messages.published_at(event))
        self.handed += handed
        self.executed += executions

    def _context(self, viewer: Viewer | None) -> dict[str, Any]:
        """A viewer's execution context for an event (their loaders, shared by its groups)."""
        return self.engine.context(viewer)


class PlainFeed(Feed):
    """An ephemeral topic without a state: each event to the subscribers there are when it
    comes; nothing to resume, nothing to re-read after a resync."""
