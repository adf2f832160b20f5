"""The live engine: every subscription field whose source returns a `LiveSource`, served at the
cost of forwarding bytes.

Each process holds one feed per topic (one broadcast subscription). A feed groups its
subscribers by what they asked for (document, operation, variables) and, when the selection
reads a field whose value depends on who asks, by viewer too; it executes each group's
selection once per event, encodes the result once, and hands every subscriber of the group
the same bytes.

What depends on who asks is told apart per event, not per viewer: a field that reads the viewer
comes with an audience function, `(event) -> keyer`, where the keyer gives a viewer's key for
that event, or is None when every viewer sees the same; a group's subscribers are split by
those keys for each event (a reaction's `mine` differs for the few who reacted, and for no one
on an event without reactions), executing once per distinct key.

A logged topic's feed delivers its events in `seq` order without gaps: it fills a gap from the
topic's log (publishers out of order, a Redis outage announced by a resync) and drops what it
has delivered already. A joining subscriber is admitted first (from then on an end reaches it),
checked, and then catches up in a task of its own, outside the feed's lock: a batch of history
from the log, sent as fast as its transport takes it, then the next, however far behind it
started. The feed keeps its last events (and the results it sent for them) in memory; once the
subscriber is within them, the hand-over to live delivery replays them under the lock, so live
delivery never waits on a resume, and nothing is missed or sent twice.

An ephemeral topic with a state (who is typing, who is online) is re-read once per process on
every change announced on it, and at the time its state says it expires (`refresh_at`):
subscribers get the state when it changes, a new one first of all.

Subscriptions end when their transport goes, when a control message on their topic ends their
viewer (a member left), when their token is revoked, or when a re-check after a reconnect
refuses them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from inspect import isawaitable
from typing import Any, Protocol

import orjson
from ariadne.logger import log_error
from graphql import (
    DocumentNode,
    ExecutionResult,
    Executor,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    execute_subscription_event,
    get_named_type,
    visit,
)

from core.broadcast import ChannelBroadcast
from core.cancelling import cancel_and_wait
from core.redis_backend import RESYNC
from execution.lean_executor import LeanExecutor
from identity.auth import Viewer
from live.replay import CHUNK as REPLAY_CHUNK
from live.replay import Allowance, ReplayBudget
from live.source import Event, LiveSource

logger = logging.getLogger("chat.live")

CATCH_UP_BATCH = 200
YIELD_EVERY = 8
RECENT = 64
# A subscriber catching up from `recent` gets all but this many of its events outside the lock.
HAND_OVER_EVENTS = 4
# What the results kept with one event of `recent` may add up to, beyond the live groups' own.
KEPT_BYTES_PER_EVENT = 256 * 1024
CONTROL = "control"
# Per event, what the groups executed before the feed takes its next event may take: each
# account (a user, or a selection shared by several) this much per user in it, and all of them
# together INLINE_TOTAL_SECONDS; the rest go to their backlogs (see Feed._deliver).
INLINE_SECONDS = 0.010
INLINE_TOTAL_SECONDS = 0.050
# Events one group's backlog may hold; past it that group is demoted to catching up from the log.
LANE_EVENTS = 32
# The share of the process's time that backlogs and costly resumes may take.
BACKGROUND_SHARE = 0.5
# A selection whose execution takes less is resumed outside that share.
CHEAP_SECONDS = 0.003
COSTS_KEPT = 4096
# How fast an account's use of the background share is forgotten (its half-life).
USAGE_HALF_LIFE_SECONDS = 10.0


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


class Releasable(Protocol):
    def release(self) -> None: ...


class Selection:
    """What a subscriber asked for; subscribers with equal keys receive the same bytes."""

    __slots__ = ("_executor", "document", "operation_name", "query", "variables", "variables_key")

    def __init__(self, document: DocumentNode, query: str, operation_name: str | None, variables: dict | None) -> None:
        self.document = document
        self.query = query
        self.operation_name = operation_name
        self.variables = variables or {}
        # A str: orjson's bytes keep a buffer of a few KiB, and every subscriber's key holds this.
        self.variables_key = orjson.dumps(self.variables, option=orjson.OPT_SORT_KEYS).decode()
        self._executor: Executor | None = None

    @classmethod
    def of(cls, document: DocumentNode, query: str, operation_name: str | None, variables: dict | None) -> Selection:
        return cls(document, query, operation_name, variables)

    def executor_for(self, schema: GraphQLSchema, event: Event, context: Any) -> Executor | list[GraphQLError]:
        """An executor for one event: built once (variables coerced, fragments collected), then
        copied per event, as graphql-core does for a subscription's events."""
        if self._executor is None:
            built = LeanExecutor.build(
                schema, self.document, raw_variable_values=self.variables, operation_name=self.operation_name
            )
            if isinstance(built, list):
                return built
            self._executor = built
        executor = self._executor.build_per_event_executor(event)
        executor.context_value = context  # fresh loaders per event: nothing goes stale
        return executor


GroupKey = tuple[str, str | None, str]
Keyer = Callable[[Viewer], Hashable]
Audience = Callable[[Event], Keyer | None]
# A payload in a feed's memory: the group's key and its subscribers' audience key for the event.
PayloadKey = tuple[GroupKey, tuple[Hashable, ...]]


def _viewer_id(viewer: Viewer) -> Hashable:
    return viewer.id


def per_viewer(_event: Event) -> Keyer:
    """The audience of a field each viewer sees differently whatever the event."""
    return _viewer_id


def keyers_for(audiences: tuple[Audience, ...], event: Event) -> list[Keyer]:
    """What tells viewers apart for this event (nothing, when all see the same)."""
    return [keyer for keyer in (audience(event) for audience in audiences) if keyer is not None]


def audience_key(keyers: list[Keyer], viewer: Viewer) -> tuple[Hashable, ...]:
    return tuple(keyer(viewer) for keyer in keyers)


class Subscription:
    """One subscriber: an operation on one transport."""

    __slots__ = ("catching_up", "engine", "feed", "key", "selection", "seq", "sink", "slot", "source")

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

    def hold(self, slot: Releasable | None) -> None:
        """Its user's subscription slot (live.quota), given back when it closes."""
        if self.feed is None and slot is not None:
            slot.release()  # closed already
            return
        self.slot = slot

    @property
    def viewer(self) -> Viewer:
        return self.source.viewer

    def deliver(self, seq: int | None, payload: bytes, event_id: str | None) -> None:
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
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        if self.feed is not None:
            self.feed.remove(self)
        self.engine.unindex(self)

    def end(self, payload: bytes) -> None:
        self.close()
        self.sink.end(payload)


# An event waiting in a group's backlog: the event, its payloads (in `recent` too), its contexts
# (loaders shared by the groups that execute it).
Backlogged = tuple[Event, dict[PayloadKey, bytes], dict[Hashable, Any]]


class Group:
    """The subscribers of one selection in one feed, executed once per event (per audience).

    Whose work it is: its `account`, the one user in it, or the group itself when several users
    share it (the web client's selection, say), weighing as many users as it serves. Time spent
    on it inline and in the background share is charged to that account, so one user's many
    selections are scheduled as that user's, and never ahead of a selection that many share."""

    __slots__ = ("audiences", "backlog", "cost", "event_id", "key", "kinds", "selection", "subscriptions", "users")

    def __init__(self, subscription: Subscription, audiences: tuple[Audience, ...], cost: float = 0.0) -> None:
        source = subscription.source
        self.key = subscription.key
        self.selection = subscription.selection
        self.audiences = audiences
        self.kinds = source.kinds
        self.event_id = source.event_id
        self.subscriptions: set[Subscription] = set()
        self.users: dict[int, int] = {}  # each user's subscriptions in it
        self.cost = cost  # seconds an event's execution takes (a moving average)
        # Events delivered to the feed and not yet to this group, in order (see Feed._deliver).
        self.backlog: deque[Backlogged] = deque()

    def add(self, subscription: Subscription) -> None:
        if subscription not in self.subscriptions:
            self.subscriptions.add(subscription)
            user = subscription.viewer.id
            self.users[user] = self.users.get(user, 0) + 1

    def discard(self, subscription: Subscription) -> None:
        if subscription in self.subscriptions:
            self.subscriptions.discard(subscription)
            user = subscription.viewer.id
            left = self.users[user] - 1
            if left:
                self.users[user] = left
            else:
                del self.users[user]

    @property
    def account(self) -> Hashable:
        if len(self.users) == 1:
            return next(iter(self.users))
        return self

    @property
    def weight(self) -> int:
        return max(1, len(self.users))

    @property
    def charge(self) -> float:
        """What an event's execution costs each user it serves."""
        return self.cost / self.weight

    def measured(self, seconds: float) -> float:
        self.cost = seconds if self.cost == 0.0 else 0.7 * self.cost + 0.3 * seconds
        return self.cost

    def by_audience(self, event: Event) -> Iterable[tuple[tuple[Hashable, ...], list[Subscription]]]:
        """The subscribers, split by what they see of this event (all together when nothing in
        the selection depends on who asks)."""
        keyers = keyers_for(self.audiences, event) if self.audiences else None
        if not keyers:
            return [((), list(self.subscriptions))]
        buckets: dict[tuple[Hashable, ...], list[Subscription]] = {}
        for subscription in self.subscriptions:
            buckets.setdefault(audience_key(keyers, subscription.viewer), []).append(subscription)
        return buckets.items()

    def wants(self, event: Event) -> bool:
        return self.kinds is None or event.get("kind") in self.kinds


class Feed:
    """One topic in this process: its broadcast subscription, groups and (logged) position."""

    def __init__(self, engine: Engine, source: LiveSource) -> None:
        self.engine = engine
        self.topic = source.topic
        self.log = source.log
        self.groups: dict[GroupKey, Group] = {}
        self.joining: set[Subscription] = set()
        # The last events delivered, contiguous up to `last_seq`, with each group's result.
        self.recent: deque[tuple[Event, dict[PayloadKey, bytes]]] = deque(maxlen=RECENT)
        self.last_seq = 0
        # An ephemeral topic's state: how it is read, the last read, and when it expires.
        self.state = source.state
        self.last_state: Event | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self.lock = asyncio.Lock()
        # The groups with a backlog, served by the lane task in the background share.
        self.behind: set[Group] = set()
        self.demoted_at = -60.0
        self._lane_task: asyncio.Task[None] | None = None
        self._stack = AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self.started: asyncio.Future[None] | None = None
        self.retired = False

    @property
    def subscriptions(self) -> list[Subscription]:
        return [*self.joining, *(s for group in self.groups.values() for s in group.subscriptions)]

    async def start(self) -> None:
        channel = self.engine.channel(self.topic)
        subscriber = await self._stack.enter_async_context(
            self.engine.broadcast.subscribe(channel, bound=self.engine.feed_queue)
        )
        if self.log is not None:
            # Subscribed first, read second: nothing appended after this read can be missed.
            for event in await self.log.newest(RECENT):
                self._remember(event, {})
        self._task = asyncio.create_task(self._run(subscriber), name=f"feed {self.topic}")

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        if self._task is not None:
            await cancel_and_wait([self._task])
        if self._lane_task is not None:
            await cancel_and_wait([self._lane_task])
        await self._stack.aclose()

    def admit(self, subscription: Subscription) -> None:
        """From now on an end reaches it; it receives nothing until it is handed over."""
        if self.log is not None and subscription.seq is None:
            subscription.seq = self.last_seq
        subscription.feed = self
        self.joining.add(subscription)

    async def catch_up(self, subscription: Subscription) -> None:
        """Send what the subscriber missed, then deliver to it live: batches of history paced by
        its transport and read outside the lock, then, once the rest is in `recent`, the
        hand-over under the lock, from memory."""
        assert self.log is not None
        sink = subscription.sink
        # What is older than `recent` is executed for this subscriber alone: paced by its user's
        # replay budget (live.replay), before the log is even read.
        allowance = Allowance(self.engine.replay, subscription.viewer.id)
        while subscription.feed is self and not sink.closed:
            assert subscription.seq is not None
            if subscription.seq >= self._remembered_from():
                entries = [entry for entry in self.recent if entry[0]["seq"] > subscription.seq]
                if len(entries) > HAND_OVER_EVENTS:
                    # All but the last few from memory, outside the lock, as from the log.
                    results = await self._results(subscription, entries[:-HAND_OVER_EVENTS], allowance)
                    if results:
                        sink.history(results)
                    await sink.drained()
                    continue
                # The results it lacks among the last few, executed outside the lock (and kept
                # with them for everyone after, room permitting): the hand-over finds them, and
                # executes under the lock only what arrived meanwhile.
                own = await self._prepare(subscription, entries, allowance)
                async with self.lock:
                    if subscription.feed is not self or subscription.seq < self._remembered_from():
                        continue
                    sink.history(await self._results(subscription, self.recent, own=own))
                    self._hand_over(subscription)
                    return
            await allowance.ensure()
            events = await self.log.after(subscription.seq, CATCH_UP_BATCH)
            if subscription.feed is not self:
                return
            if not events:  # the log has nothing newer than `recent` says: hand over
                subscription.seq = max(subscription.seq, self._remembered_from())
                continue
            # A budget's chunk at a time: what the budget allowed goes out before it waits.
            for start in range(0, len(events), REPLAY_CHUNK):
                chunk = events[start : start + REPLAY_CHUNK]
                results = await self._results(subscription, ((event, {}) for event in chunk), allowance)
                if results:
                    sink.history(results)
            await sink.drained()

    async def join_now(self, subscription: Subscription) -> None:
        """An ephemeral topic's subscriber: its current state first, then every change."""
        state = subscription.source.state
        if state is not None:
            event = await state()
            if subscription.feed is not self:
                return
            async with self.lock:
                if self.last_state is None:
                    self._remember_state(event)
                # The feed's own read: any change since it was made reaches this subscriber now.
                event = self.last_state or event
                payload = await self.engine.execute(subscription.selection, subscription.viewer, event)
                subscription.sink.send(payload, None)
                self._hand_over(subscription)
            return
        self._hand_over(subscription)

    def _remembered_from(self) -> int:
        """Every event after this seq is in `recent` (or not yet delivered by the feed)."""
        return self.recent[0][0]["seq"] - 1 if self.recent else self.last_seq

    async def _results(
        self,
        subscription: Subscription,
        history: Iterable[tuple[Event, dict[PayloadKey, bytes]]],
        allowance: Allowance | None = None,
        own: Mapping[int, tuple[Event, bytes]] | None = None,
    ) -> list[tuple[bytes, str | None]]:
        """Each event's result for this subscriber: its group's, when the feed kept it, or its
        own from `_prepare` (for that very event, not a revision of it), else executed (counted
        in `allowance`) and kept for the next resume."""
        source = subscription.source
        results = []
        executed = 0
        for event, payloads in history:
            assert subscription.seq is not None
            if event["seq"] <= subscription.seq:
                continue
            subscription.seq = event["seq"]
            if source.kinds is not None and event.get("kind") not in source.kinds:
                continue
            keyers = keyers_for(self.engine.audiences(subscription.selection), event)
            payload_key = (subscription.key, audience_key(keyers, subscription.viewer))
            payload = payloads.get(payload_key)
            if payload is None and own is not None and (prepared := own.get(event["seq"])) is not None:
                if prepared[0] is event:
                    payload = prepared[1]
            if payload is None:
                if allowance is not None:
                    await allowance.spend()
                    payload = await self.engine.execute_resumed(subscription, event)
                else:
                    payload = await self.engine.execute(subscription.selection, subscription.viewer, event)
                _keep(payloads, payload_key, payload)  # an event of `recent`: the next resume shares it
                executed += 1
                if executed % YIELD_EVERY == 0 and not self.lock.locked():
                    # A resume is one client's: live delivery to everyone else goes between.
                    await asyncio.sleep(0)
            results.append((payload, source.event_id(event) if source.event_id else None))
        return results

    async def _prepare(
        self, subscription: Subscription, entries: list[tuple[Event, dict[PayloadKey, bytes]]], allowance: Allowance
    ) -> dict[int, tuple[Event, bytes]]:
        """The subscriber's results for `entries` (a few events of `recent`) that nobody has
        asked for yet, executed, kept with them where there is room, and returned by seq with
        their event; nothing is sent."""
        own: dict[int, tuple[Event, bytes]] = {}
        source = subscription.source
        assert subscription.seq is not None
        for event, payloads in entries:
            if event["seq"] <= subscription.seq or (source.kinds is not None and event.get("kind") not in source.kinds):
                continue
            keyers = keyers_for(self.engine.audiences(subscription.selection), event)
            payload_key = (subscription.key, audience_key(keyers, subscription.viewer))
            if payload_key not in payloads:
                await allowance.spend()
                payload = await self.engine.execute_resumed(subscription, event)
                _keep(payloads, payload_key, payload)
                own[event["seq"]] = (event, payload)
            if subscription.feed is not self:
                break
        return own

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
        if message == RESYNC:  # Redis came back: what was said meanwhile is lost to us
            if self.log is not None:
                await self._fill(None)
            elif self.state is not None:
                await self._reread()
            self.engine.recheck(self.subscriptions)
            return
        event = orjson.loads(message)
        control = event.get(CONTROL)
        if control == "end":
            user, error = event["user"], event["error"]
            self.engine.end_where(self.subscriptions, lambda s: s.viewer.id == user, error)
            return
        if self.log is None:
            if self.state is None:
                await self._deliver(event)
            else:
                await self._reread()
            return
        seq = event["seq"]
        if seq <= self.last_seq:
            return
        if seq > self.last_seq + 1:
            await self._fill(seq - 1)
        if seq == self.last_seq + 1:
            await self._deliver(event)

    async def _fill(self, upto: int | None) -> None:
        """Deliver the log's events after `last_seq` (up to `upto`, when given)."""
        assert self.log is not None
        while upto is None or self.last_seq < upto:
            events = await self.log.after(self.last_seq, CATCH_UP_BATCH)
            if not events:
                return
            for event in events:
                if upto is not None and event["seq"] > upto:
                    return
                await self._deliver(event)

    async def _reread(self) -> None:
        """The state again (a change was announced, or it expires now): delivered if it changed."""
        assert self.state is not None
        event = await self.state()
        changed = _settled(event) != _settled(self.last_state)
        self._remember_state(event)
        if changed:
            await self._deliver(event)

    def _remember_state(self, event: Event) -> None:
        self.last_state = event
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        refresh_at = event.get("refresh_at")
        if refresh_at is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, refresh_at - time.time())
            self._refresh = loop.call_later(delay, lambda: self.engine.spawn(self._refreshed()))

    async def _refreshed(self) -> None:
        self._refresh = None
        async with self.lock:
            await self._reread()

    async def _deliver(self, event: Event) -> None:
        """The event to every group: one set of loaders per viewer for all of them (what one
        group read, the next finds loaded), the cheapest per user served first.

        On a logged topic, what runs before the feed takes its next event is bounded: each
        group's account (live.engine.Group) may spend INLINE_SECONDS per user it stands for,
        and all of them INLINE_TOTAL_SECONDS. A group past its account's allowance, not yet
        measured, or with events already waiting (each group's events stay in order) gets the
        event in its backlog instead; the lane executes backlogs after, outside the lock, in at
        most BACKGROUND_SHARE of the process's time, the account that used the least of it
        first. So one user's heavy selections wait behind their own, never in front of anyone
        else's, and a group more than LANE_EVENTS behind catches up from the log instead."""
        seq = event.get("seq") if self.log is not None else None
        payloads: dict[PayloadKey, bytes] = {}
        contexts: dict[Hashable, Any] = {}
        spent: dict[Hashable, float] = {}
        total = 0.0
        deferred: list[Group] = []
        for group in sorted(self.groups.values(), key=_by_charge):
            if not group.wants(event):
                continue
            if self.log is not None:
                account = group.account
                allowance = INLINE_SECONDS * group.weight - spent.get(account, 0.0)
                # A group not measured yet is measured in the lane: a costly one never runs inline.
                if (
                    group.backlog
                    or group.cost == 0.0
                    or group.cost > allowance
                    or total + group.cost > INLINE_TOTAL_SECONDS
                ):
                    deferred.append(group)
                    continue
            started = time.perf_counter()
            await self._deliver_group(group, event, seq, payloads, contexts)
            elapsed = time.perf_counter() - started
            self.engine.remember_cost(group.key, group.measured(elapsed))
            if self.log is not None:
                spent[account] = spent.get(account, 0.0) + elapsed
                total += elapsed
        if self.log is not None:
            self._remember(event, payloads)
            for group in deferred:
                self._defer(group, (event, payloads, contexts))

    async def _deliver_group(
        self,
        group: Group,
        event: Event,
        seq: int | None,
        payloads: dict[PayloadKey, bytes],
        contexts: dict[Hashable, Any],
    ) -> None:
        event_id = group.event_id(event) if group.event_id is not None else None
        for audience, subscriptions in group.by_audience(event):
            viewer = subscriptions[0].viewer if audience else None
            shared = None if viewer is None else (viewer.id, viewer.token_hash)
            context = contexts.get(shared)
            if context is None:
                context = contexts[shared] = self.engine.context(viewer)
            payload = payloads[(group.key, audience)] = await self.engine.execute(
                group.selection, viewer, event, context
            )
            for subscription in subscriptions:
                if subscription.feed is self:
                    subscription.deliver(seq, payload, event_id)

    def _defer(self, group: Group, entry: Backlogged) -> None:
        if len(group.backlog) >= LANE_EVENTS:
            self._demote(group)
            return
        group.backlog.append(entry)
        self.behind.add(group)
        if self._lane_task is None:
            self._lane_task = asyncio.create_task(self._run_lane(), name=f"lane {self.topic}")

    def _forget(self, group: Group) -> None:
        """The group is gone from the feed: its backlog with it."""
        group.backlog.clear()
        self.behind.discard(group)

    def _demote(self, group: Group) -> None:
        """The group's subscribers catch up from the log from where each stands (nothing missed,
        nothing twice), paced by their users' replay budgets, then rejoin live delivery."""
        if self.groups.get(group.key) is not group:
            return
        del self.groups[group.key]
        self._forget(group)
        now = time.monotonic()
        if now - self.demoted_at > 60.0:  # once a minute at most: an attacker's demotions are many
            self.demoted_at = now
            logger.warning(
                "Topic %s: costly selections fell %d events behind; they catch up from the log", self.topic, LANE_EVENTS
            )
        for subscription in group.subscriptions:
            self.joining.add(subscription)
            subscription.catching_up = asyncio.create_task(self.engine._catch_up(self, subscription))

    async def _run_lane(self) -> None:
        """The backlogs, one event of one group at a time: the group whose account used the least
        of the background share goes next."""
        share = self.engine.share
        try:
            while self.behind:
                group = min(self.behind, key=share.order)
                if self.groups.get(group.key) is not group or not group.backlog:
                    self.behind.discard(group)
                    continue
                async with share.piece(group.account, group.weight):
                    if not group.backlog:  # demoted while it waited
                        continue
                    event, payloads, contexts = group.backlog[0]
                    started = time.perf_counter()
                    try:
                        await self._deliver_group(group, event, event["seq"], payloads, contexts)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # e.g. the database away: it resumes from the log
                        logger.exception("Topic %s: delivering an event failed", self.topic)
                        self._demote(group)
                        continue
                    self.engine.remember_cost(group.key, group.measured(time.perf_counter() - started))
                    if group.backlog:
                        group.backlog.popleft()
                    if not group.backlog:
                        self.behind.discard(group)
        finally:
            if self._lane_task is asyncio.current_task():
                self._lane_task = None

    def _remember(self, event: Event, payloads: dict[PayloadKey, bytes]) -> None:
        assert self.log is not None
        for index, (earlier, _) in enumerate(self.recent):
            revised = self.log.revised(earlier, event)
            if revised is not None:
                self.recent[index] = (revised, {})  # its results are re-executed when asked for
        self.recent.append((event, payloads))
        self.last_seq = event["seq"]


ContextFactory = Callable[[Viewer | None], dict[str, Any]]
ErrorFormatter = Callable[[GraphQLError, bool], dict]


class Engine:
    """This process's feeds."""

    def __init__(
        self,
        schema: GraphQLSchema,
        broadcast: ChannelBroadcast,
        *,
        channel_prefix: str,
        context: ContextFactory,
        viewer_fields: Mapping[tuple[str, str], Audience],
        error_formatter: ErrorFormatter,
        logger_name: str = "chat.graphql",
        debug: bool = False,
        feed_queue: int | None = None,
        replay: ReplayBudget | None = None,
        max_payload_bytes: int | None = None,
    ) -> None:
        """`max_payload_bytes`: an event's encoded result longer than this goes out as a
        RESPONSE_TOO_LARGE error instead (MAX_RESPONSE_BYTES, as for queries and mutations)."""
        self.schema = schema
        self.broadcast = broadcast
        self.channel_prefix = channel_prefix
        self.context = context
        self.viewer_fields = dict(viewer_fields)
        self.error_formatter = error_formatter
        self.logger = logging.getLogger(logger_name)
        self.debug = debug
        # Messages waiting for one feed; past it the feed resyncs (core.broadcast).
        self.feed_queue = feed_queue
        self.replay = replay
        self.max_payload_bytes = max_payload_bytes
        self.feeds: dict[str, Feed] = {}
        self.by_token: dict[str, set[Subscription]] = {}
        self._audiences: dict[str, tuple[Audience, ...]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.share = WorkShare()
        self.costs: dict[GroupKey, float] = {}

    def channel(self, topic: str) -> str:
        return f"{self.channel_prefix}{topic}"

    async def subscribe(
        self, source: LiveSource, selection: Selection, sink: Sink
    ) -> Subscription | GraphQLError | None:
        """The running subscription; the error that refuses it; or None when it ended while
        starting (its end is on the way to the client). Raises what the topic's check raises
        (the database unavailable), having admitted nothing."""
        key: GroupKey = (selection.query, selection.operation_name, selection.variables_key)
        subscription = Subscription(self, source, selection, key, sink)
        feed = await self._feed(source)
        feed.admit(subscription)
        self.by_token.setdefault(source.viewer.token_hash, set()).add(subscription)
        # The source checked access before the subscription was in its feed: an end published in
        # between passed it by. Checked again now that any later end reaches it.
        try:
            refusal = await source.check()
        except BaseException:
            subscription.close()
            raise
        if subscription.feed is None:
            return None
        if refusal is not None:
            subscription.close()
            return refusal
        if feed.log is not None:
            subscription.catching_up = asyncio.create_task(self._catch_up(feed, subscription))
        else:
            await feed.join_now(subscription)
        return subscription

    async def _catch_up(self, feed: Feed, subscription: Subscription) -> None:
        """A resume that cannot be served now (the log unreachable mid-way) ends the transport
        retryably: the client comes back and resumes from the last result it got."""
        try:
            await feed.catch_up(subscription)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("Catching up a subscriber failed (%s); asking it to retry", type(error).__name__)
            subscription.close()
            subscription.sink.try_again_later()

    async def _feed(self, source: LiveSource) -> Feed:
        """The topic's feed, started if need be (one broadcast subscription per topic)."""
        while True:
            feed = self.feeds.get(source.topic)
            if feed is None:
                feed = self.feeds[source.topic] = Feed(self, source)
                feed.started = asyncio.ensure_future(feed.start())
            assert feed.started is not None
            try:
                await asyncio.shield(feed.started)
            except BaseException:
                if self.feeds.get(source.topic) is feed:
                    del self.feeds[source.topic]
                raise
            if not feed.retired:  # else it was retired meanwhile: the topic's next feed
                return feed

    def retire(self, feed: Feed) -> None:
        feed.retired = True
        if self.feeds.get(feed.topic) is feed:
            del self.feeds[feed.topic]
        self.spawn(feed.stop())

    def unindex(self, subscription: Subscription) -> None:
        token = subscription.viewer.token_hash
        subscriptions = self.by_token.get(token)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self.by_token[token]

    async def execute_resumed(self, subscription: Subscription, event: Event) -> bytes:
        """A resumed subscriber's result for a past event: a selection known to be costly runs
        within the process's share for background work (WorkShare), a cheap one at once (an
        honest client catching up never queues behind someone's costly resumes)."""
        cost = self.costs.get(subscription.key, 0.0)
        if cost < CHEAP_SECONDS:
            started = time.perf_counter()
            payload = await self.execute(subscription.selection, subscription.viewer, event)
            self.remember_cost(subscription.key, max(cost, time.perf_counter() - started))
            return payload
        async with self.share.piece(subscription.viewer.id):
            return await self.execute(subscription.selection, subscription.viewer, event)

    def remember_cost(self, key: GroupKey, seconds: float) -> None:
        """What a selection costs an event, for its groups in any feed, now and later."""
        if key not in self.costs and len(self.costs) >= COSTS_KEPT:
            self.costs.clear()
        self.costs[key] = seconds

    async def execute(
        self, selection: Selection, viewer: Viewer | None, event: Event, context: dict[str, Any] | None = None
    ) -> bytes:
        """A selection executed once for an event, its result encoded once; `context`: one
        shared with the event's other executions for the same viewer (their loaders)."""
        executor = selection.executor_for(self.schema, event, self.context(viewer) if context is None else context)
        outcome = (
            ExecutionResult(None, errors=executor)
            if isinstance(executor, list)
            else execute_subscription_event(executor)
        )
        result = await outcome if isawaitable(outcome) else outcome
        assert isinstance(result, ExecutionResult)
        if not result.errors:
            return self._bounded(orjson.dumps({"data": result.data}))
        for error in result.errors:
            log_error(error, self.logger)
        errors = [self.error_formatter(error, self.debug) for error in result.errors]
        return self._bounded(orjson.dumps({"data": result.data, "errors": errors}))

    def _bounded(self, payload: bytes) -> bytes:
        """The payload, or RESPONSE_TOO_LARGE in its place: the work is done by then, but the
        bytes are never queued for any of the group's subscribers."""
        limit = self.max_payload_bytes
        if limit is None or len(payload) <= limit:
            return payload
        message = f"The result ({len(payload)} bytes) is longer than {limit} bytes: select less."
        error = GraphQLError(message, extensions={"code": "RESPONSE_TOO_LARGE"})
        return orjson.dumps({"data": None, "errors": [self.error_formatter(error, self.debug)]})

    def end_where(
        self, subscriptions: Iterable[Subscription], matches: Callable[[Subscription], bool], error: dict
    ) -> None:
        """End the subscriptions that `matches`, with `error` (already formatted)."""
        payload = orjson.dumps({"errors": [error]})
        for subscription in [s for s in subscriptions if matches(s)]:
            subscription.end(payload)

    def end_token(self, token_hash: str, error: GraphQLError) -> None:
        """A revoked token's subscriptions end, on every topic."""
        subscriptions = list(self.by_token.get(token_hash, ()))
        self.end_where(subscriptions, lambda _s: True, self.error_formatter(error, self.debug))

    def recheck(self, subscriptions: Iterable[Subscription]) -> None:
        """Check each subscription again (after a reconnect, ends may have been missed)."""
        for subscription in list(subscriptions):
            self.spawn(self._recheck(subscription))

    def recheck_all(self) -> None:
        self.recheck(s for subscriptions in self.by_token.values() for s in subscriptions)

    async def _recheck(self, subscription: Subscription) -> None:
        try:
            refusal = await subscription.source.check()
        except Exception as error:  # the database away too: the client comes back and is checked then
            logger.warning("Re-checking a subscription failed (%s); asking it to retry", type(error).__name__)
            subscription.close()
            subscription.sink.try_again_later()
            return
        if refusal is not None and subscription.feed is not None:
            subscription.end(orjson.dumps({"errors": [self.error_formatter(refusal, self.debug)]}))

    def audiences(self, selection: Selection) -> tuple[Audience, ...]:
        """The audience functions of the fields the selection reads that depend on who asks."""
        if not self.viewer_fields:
            return ()
        found = self._audiences.get(selection.query)
        if found is None:
            read = _fields_read(self.schema, selection.document, frozenset(self.viewer_fields))
            found = tuple(dict.fromkeys(self.viewer_fields[coordinate] for coordinate in sorted(read)))
            if len(self._audiences) > 1024:
                self._audiences.clear()
            self._audiences[selection.query] = found
        return found

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for feed in list(self.feeds.values()):
            await feed.stop()
        self.feeds.clear()
        await cancel_and_wait(self._tasks)


def _by_charge(group: Group) -> float:
    return group.charge


class WorkShare:
    """At most `share` of the process's time for background work (backlogs, resumes from the
    log), handed out fairly between accounts.

    One piece at a time (so what runs between two pieces waits for one at most), from a bucket
    filled at `share` seconds a second, up to `burst`; work waits while it is empty and is
    charged what it took. Each piece is charged to an account (a user, or a selection shared by
    `weight` users, charged a `weight`th of it), and of the pieces waiting, the one whose account
    used the least lately (a use decays with USAGE_HALF_LIFE_SECONDS) goes next: however many
    pieces one user queues, anyone else's next piece waits for one of them at most."""

    def __init__(self, share: float = BACKGROUND_SHARE, burst: float = 0.1) -> None:
        self.share = share
        self.burst = burst
        self.level = burst
        self.at = time.monotonic()
        self._busy = False
        self._waiting: list[tuple[Hashable, asyncio.Future[None]]] = []
        self._usage: dict[Hashable, tuple[float, float]] = {}  # account: (use, when)

    def usage(self, account: Hashable) -> float:
        """An account's recent use of the share, in seconds (decayed)."""
        found = self._usage.get(account)
        if found is None:
            return 0.0
        used, at = found
        return used * 0.5 ** ((time.monotonic() - at) / USAGE_HALF_LIFE_SECONDS)

    @property
    def waiting(self) -> int:
        """Pieces waiting for their turn."""
        return len(self._waiting)

    def order(self, group: Group) -> float:
        return self.usage(group.account)

    def _charge(self, account: Hashable, seconds: float) -> None:
        if account not in self._usage and len(self._usage) >= COSTS_KEPT:
            self._usage.clear()
        self._usage[account] = (self.usage(account) + seconds, time.monotonic())

    @asynccontextmanager
    async def piece(self, account: Hashable = None, weight: int = 1) -> AsyncIterator[None]:
        if self._busy or self._waiting:
            waiter = asyncio.get_running_loop().create_future()
            entry = (account, waiter)
            self._waiting.append(entry)
            try:
                await waiter
            except BaseException:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                elif waiter.done() and not waiter.cancelled():
                    self._next()  # it was handed the turn: pass it on
                raise
        self._busy = True
        started = 0.0
        try:
            await self.turn()
            started = time.perf_counter()
            yield
        finally:
            if started:
                elapsed = time.perf_counter() - started
                self.spent(elapsed)
                self._charge(account, elapsed / weight)
            self._next()

    def _next(self) -> None:
        """The turn to the waiting piece whose account used the least, or to nobody."""
        self._busy = False
        self._waiting = [entry for entry in self._waiting if not entry[1].done()]  # cancelled ones
        if self._waiting:
            entry = min(self._waiting, key=lambda waiting: self.usage(waiting[0]))
            self._waiting.remove(entry)
            self._busy = True
            entry[1].set_result(None)

    def _fill(self) -> None:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.share)
        self.at = now

    async def turn(self) -> None:
        self._fill()
        while self.level <= 0:
            await asyncio.sleep(-self.level / self.share)  # the time the bucket takes to refill
            self._fill()

    def spent(self, seconds: float) -> None:
        self._fill()
        self.level -= seconds


def _keep(payloads: dict[PayloadKey, bytes], key: PayloadKey, payload: bytes) -> None:
    """Keep a resumer's result with its event of `recent` for the next resume of the same
    selection, while the event's results stay within KEPT_BYTES_PER_EVENT: a loop of resumes,
    each a new selection, would otherwise add one result per event per selection until the
    event left `recent` (in a quiet room, never)."""
    if key in payloads:
        return
    if sum(map(len, payloads.values())) + len(payload) <= KEPT_BYTES_PER_EVENT:
        payloads[key] = payload


def _settled(state: Event | None) -> Event | None:
    """A state but for when it next expires: a renewal alone is no change to announce."""
    return None if state is None else {key: value for key, value in state.items() if key != "refresh_at"}


def _fields_read(
    schema: GraphQLSchema, document: DocumentNode, coordinates: frozenset[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of `coordinates` (type, field) the document selects."""
    type_info = TypeInfo(schema)
    found: set[tuple[str, str]] = set()

    class Finder(Visitor):
        def enter_field(self, node: FieldNode, *_args: Any) -> None:
            parent = type_info.get_parent_type()
            if parent is not None and (coordinate := (get_named_type(parent).name, node.name.value)) in coordinates:
                found.add(coordinate)

    visit(document, TypeInfoVisitor(type_info, Finder()))
    return found
