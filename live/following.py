"""A topic that follows other topics: its subscribers hear its own events and those of the
topics it follows, as one subscription (a user's feed of all their rooms, say: their own topic
says which rooms they joined or left, each room's fan-out topic says what changed in it).

A `FollowingFeed` is a plain feed (no log, nothing to resume) that also holds a set of followed
topics, read from its first source's `follows` when it starts (after its own broadcast
subscription is in place, so a change announced meanwhile is not missed) and again after a
resync. An event on its own topic may name a topic under FOLLOW (followed before the event is
delivered: what that topic says next reaches the subscribers) or UNFOLLOW (left before the event
is delivered: nothing of that topic reaches them after it).

A followed topic is heard through this process's one `Relay` for it: one broadcast
subscription per topic per process however many feeds follow it. A relay hands each event to
every feed following the topic; each delivers it under its own lock, to its own groups (so what
depends on who asks is executed per viewer there, as in any feed). Those whose executions have
what they need prepared deliver one after another in the relay's task (their deliveries read
nothing); the others (a lock held, or executions that read for themselves) each in a task of its
own, so their waits hold up none of the rest. What one
event on a followed topic costs: one publish, one delivery per process that follows it, and
one execution per distinct selection (and audience) of each following feed in that process.

A following feed's source may also `prepare` what its executions need (live.source): the relay
then reads it once per event for every following viewer of the process, before handing the
event on, so each execution finds its own value at hand (one read for a room's thousand local
members, and none of them waiting on it apart).

A relay that resyncs (Redis came back, or the relay fell behind) may have lost events: these
are notes of a state (nothing to re-read), and the following feeds' own topics resync at the
same moment for a reconnect, re-reading what they follow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from core.cancelling import cancel_and_wait
from identity.auth import Viewer
from live import messages
from live.feed import PlainFeed
from live.selection import GroupKey, Template
from live.source import FOLLOW, PREPARED, UNFOLLOW, Event, LiveSource, Prepare
from telemetry import record, traces

if TYPE_CHECKING:
    from live.engine import Engine
    from live.subscription import Subscription

logger = logging.getLogger("chat.live")


class FollowingFeed(PlainFeed):
    """A topic's feed that also delivers the events of the topics it follows."""

    def __init__(self, engine: Engine, source: LiveSource) -> None:
        super().__init__(engine, source)
        assert source.follows is not None
        self.follows: Callable[[], Awaitable[Iterable[str]]] = source.follows
        self.followed: set[str] = set()
        self.prepare: Prepare | None = source.prepare
        self._prepared: Mapping[int, Any] | None = None  # for the followed topic's event being delivered
        self._viewers: list[Viewer] | None = None  # its subscribers' (`viewers`)

    async def _subscribed(self) -> None:
        try:
            await self._refollow()
        except BaseException:  # the feed does not start: it follows nothing
            await self._stopped()
            raise

    async def _stopped(self) -> None:
        for topic in list(self.followed):
            self._unfollow(topic)

    async def _refollow(self) -> None:
        """Follow what `follows` says now, and nothing else."""
        wanted = set(await self.follows())
        for topic in self.followed - wanted:
            self._unfollow(topic)
        await asyncio.gather(*(self._follow(topic) for topic in wanted - self.followed))

    async def _follow(self, topic: str) -> None:
        if topic in self.followed:
            return
        self.followed.add(topic)
        try:
            await self.engine.relays.follow(topic, self)
        except BaseException:
            self.followed.discard(topic)
            raise

    def _unfollow(self, topic: str) -> None:
        if topic in self.followed:
            self.followed.discard(topic)
            self.engine.relays.unfollow(topic, self)

    async def _on_event(self, event: Event) -> None:
        unfollow = event.get(UNFOLLOW)
        if isinstance(unfollow, str):
            self._unfollow(unfollow)
        follow = event.get(FOLLOW)
        if isinstance(follow, str):
            await self._follow(follow)
        await self._deliver(event)

    async def _on_resync(self) -> None:
        await self._refollow()

    async def relayed(
        self,
        topic: str,
        event: Event,
        prepared: Mapping[int, Any] | None = None,
        keeping: list[Subscription] | None = None,
        delivery: record.Delivery | None = None,
    ) -> None:
        """An event of a followed topic, delivered unless the topic was left meanwhile;
        `prepared`: what `prepare` read for it, by viewer id; `keeping`: where its subscribers
        are listed, each keeping its result (Subscription.keep) for the caller to hand over;
        `delivery`: where what it hands is added up with the other followers' (the relay's)."""
        try:
            async with self.lock:
                if topic in self.followed and not self.retired:
                    self._prepared = prepared
                    self.keeping = keeping
                    self.delivery = delivery
                    try:
                        await self._deliver(event)
                    finally:
                        self._prepared = None
                        self.keeping = None
                        self.delivery = None
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Topic %s: delivering an event of %s failed", self.topic, topic)

    def _context(self, viewer: Viewer | None) -> dict[str, Any]:
        return self._prepared_context(viewer, self._prepared)

    def _prepared_context(self, viewer: Viewer | None, prepared: Mapping[int, Any] | None) -> dict[str, Any]:
        context = super()._context(viewer)
        if prepared is not None and viewer is not None and viewer.id in prepared:
            context[PREPARED] = prepared[viewer.id]
        return context

    def templated(
        self,
        topic: str,
        event: Event,
        prepared: Mapping[int, Any],
        templates: dict[GroupKey, Template | None],
        keeping: list[Subscription],
        handed: dict[str, int],
    ) -> bool:
        """A followed topic's event kept for each of this feed's subscribers (listed in
        `keeping`, counted by field in `handed`), made from the one execution of their selection
        for every follower (`templates`, by group key: made here by the first follower that
        needs one) with their own values written in, executing nothing of its own. False where
        any of it cannot be made so, having kept nothing (`relayed` then delivers it all,
        executing as usual). Under the caller's promise that nothing else runs between its
        checking this feed's lock free and this call's return (no await: as under the lock)."""
        if topic not in self.followed or self.retired:
            return True
        engine = self.engine
        made: list[tuple[Subscription, bytes, str | None]] = []
        for group in self.groups.values():
            if not group.wants(event):
                continue
            event_id = group.event_id(event) if group.event_id is not None else None
            payloads: dict[tuple[int, str], bytes] = {}  # a user's subscriptions share a token's result
            for subscription in group.subscriptions:
                viewer = subscription.source.viewer
                payload = payloads.get((viewer.id, viewer.token_hash))
                if payload is None:
                    context = self._prepared_context(viewer, prepared)
                    if group.key in templates:
                        template = templates[group.key]
                        data = None if template is None else template.for_viewer(context)
                    else:  # executed for this viewer
                        template = templates[group.key] = engine.template(group.selection, event, context)
                        data = None if template is None else template.data
                    if data is None:
                        return False
                    payload = payloads[(viewer.id, viewer.token_hash)] = engine.encode(data)
                made.append((subscription, payload, event_id))
        for subscription, payload, event_id in made:
            if subscription.feed is self:
                subscription.keep(None, payload, event_id)
                keeping.append(subscription)
                field = subscription.selection.field
                handed[field] = handed.get(field, 0) + 1
                self.handed += 1
        return True

    def _hand_over(self, subscription: Subscription) -> None:
        super()._hand_over(subscription)
        self._viewers = None

    def remove(self, subscription: Subscription) -> None:
        super().remove(subscription)
        self._viewers = None

    def viewers(self) -> list[Viewer]:
        """Its subscribers' viewers (kept until one joins or leaves: a relay asks on every event)."""
        if self._viewers is None:
            self._viewers = [s.viewer for group in self.groups.values() for s in group.subscriptions]
        return self._viewers


class Relay:
    """This process's one broadcast subscription to a followed topic, and who follows it."""

    def __init__(self, engine: Engine, topic: str) -> None:
        self.engine = engine
        self.topic = topic
        self.followers: set[FollowingFeed] = set()
        self.started: asyncio.Future[None] | None = None
        self._stack = AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        subscriber = await self._stack.enter_async_context(
            self.engine.broadcast.subscribe(self.engine.channel(self.topic), bound=self.engine.feed_queue)
        )
        self._task = asyncio.create_task(self._run(subscriber), name=f"relay {self.topic}")

    async def stop(self) -> None:
        if self.started is not None:
            try:
                await self.started
            except BaseException:  # it never started: nothing to undo
                pass
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self._stack.aclose()

    async def _run(self, subscriber: Any) -> None:
        async for message in subscriber:
            read = messages.read(message.message)
            if isinstance(read, messages.Resync | messages.End):
                continue  # a state's notes: nothing to re-read; nobody subscribes to this topic itself
            traceparent = messages.trace_parent(read)
            if traceparent is None:
                await self._relay(read)
                continue
            with traces.delivering(traceparent) as span:  # as a feed's own topic's event (live.feed)
                delivery = await self._relay(read)
                traces.delivered(span, delivery.subscribers, delivery.executions)

    async def _relay(self, event: Event) -> record.Delivery:
        """The event prepared for, and handed on to, every follower there is now."""
        followers = list(self.followers)
        prepared = await self._prepare(event, followers)
        delivery = record.Delivery()
        try:
            await self._hand_on(event, followers, prepared, delivery)
        finally:
            delivery.done()
        return delivery

    async def _hand_on(
        self,
        event: Event,
        followers: list[FollowingFeed],
        prepared: dict[Any, Mapping[int, Any]],
        delivery: record.Delivery,
    ) -> None:
        """The event to every follower, each under its own lock; returns once all have it.

        A follower whose executions have what they need at hand (prepared) and whose lock is free
        delivers in this task, one after another: its delivery reads nothing, so it does not wait,
        and a task of its own per follower would cost more than the delivery. Their results are
        kept until all of them have executed the event, then written one after another: a
        client's socket written between two executions each time wakes its reader for each
        frame, and that kernel work (charged to the writer) cost as much as the execution, where
        frames written together, as a room's `messageCreated` is, find their readers awake. The
        others (a lock held by an event of their own topic, or executions that read for
        themselves) deliver in tasks of their own, started first, so none waits behind
        another's reads.

        What all of them handed is added up in `delivery`, counted once for the event, its
        latency recorded once, when the last of them is done (record.Delivery)."""
        at_once: list[tuple[FollowingFeed, Mapping[int, Any]]] = []
        apart: list[Awaitable[None]] = []
        for feed in followers:
            given = prepared.get(_kind(feed.prepare))
            if given is not None and not feed.lock.locked():
                at_once.append((feed, given))
            else:
                apart.append(feed.relayed(self.topic, event, given, None, delivery))
        waiting = asyncio.gather(*apart) if apart else None
        keeping: list[Subscription] = []
        try:
            for feed, given in self._templated(event, at_once, keeping, delivery):
                await feed.relayed(self.topic, event, given, keeping, delivery)
        except BaseException:
            if waiting is not None:
                waiting.cancel()
            raise
        finally:
            for subscription in keeping:
                subscription.hand_over()
        if waiting is not None:
            await waiting

    def _templated(
        self,
        event: Event,
        at_once: list[tuple[FollowingFeed, Mapping[int, Any]]],
        keeping: list[Subscription],
        delivery: record.Delivery,
    ) -> list[tuple[FollowingFeed, Mapping[int, Any]]]:
        """The event kept for the subscribers of every follower whose results can be made from
        one execution per selection (FollowingFeed.templated), in one synchronous step (no
        follower's lock is taken meanwhile: none is held, and nothing else runs); the followers
        it could not serve so, to be delivered as usual."""
        templates: dict[GroupKey, Template | None] = {}
        rest: list[tuple[FollowingFeed, Mapping[int, Any]]] = []
        handed: dict[str, int] = {}
        for feed, given in at_once:
            try:
                served = feed.templated(self.topic, event, given, templates, keeping, handed)
            except Exception:  # the usual path reports it
                served = False
            if not served:
                rest.append((feed, given))
        published_at = messages.published_at(event)
        for template in templates.values():
            if template is not None:
                delivery.add(template.field, 0, 1, published_at)
        for field, count in handed.items():
            delivery.add(field, count, 0, published_at)
        return rest

    async def _prepare(self, event: Event, followers: list[FollowingFeed]) -> dict[Any, Mapping[int, Any]]:
        """What each kind of `prepare` read for the event, for all the followers of that kind at
        once; a kind that failed reads nothing (its executions read for themselves)."""
        kinds: dict[Any, tuple[Prepare, list[Viewer]]] = {}
        for feed in followers:
            if feed.prepare is not None:
                kind = _kind(feed.prepare)
                found = kinds.get(kind)
                if found is None:
                    found = kinds[kind] = (feed.prepare, [])
                found[1].extend(feed.viewers())
        prepared: dict[Any, Mapping[int, Any]] = {}
        for kind, (prepare, viewers) in kinds.items():
            if not viewers:
                continue
            try:
                prepared[kind] = await prepare(event, viewers)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("Topic %s: preparing an event failed (%s)", self.topic, type(error).__name__)
        return prepared


def _kind(prepare: Prepare | None) -> Any:
    """Which `prepare` functions serve each other's viewers: the same function, bound or not."""
    return getattr(prepare, "__func__", prepare)


class Relays:
    """This process's relays, by topic: started by the first feed to follow a topic, stopped
    when the last one leaves it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.by_topic: dict[str, Relay] = {}

    async def follow(self, topic: str, feed: FollowingFeed) -> None:
        """Returns once the topic's broadcast subscription is in place: what it says from then
        on reaches `feed`."""
        relay = self.by_topic.get(topic)
        if relay is None:
            relay = self.by_topic[topic] = Relay(self.engine, topic)
            relay.started = asyncio.ensure_future(relay.start())
        relay.followers.add(feed)
        assert relay.started is not None
        try:
            await asyncio.shield(relay.started)
        except BaseException:
            self.unfollow(topic, feed)
            raise

    def unfollow(self, topic: str, feed: FollowingFeed) -> None:
        relay = self.by_topic.get(topic)
        if relay is None:
            return
        relay.followers.discard(feed)
        if not relay.followers:
            del self.by_topic[topic]
            self.engine.spawn(relay.stop())

    async def close(self) -> None:
        relays = list(self.by_topic.values())
        self.by_topic.clear()
        for relay in relays:
            await relay.stop()
