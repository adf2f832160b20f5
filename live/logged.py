"""A logged topic's feed: its events in `seq` order, without gaps, resumable.

It fills a gap from the topic's log (publishers out of order, a Redis outage announced by a
resync) and drops what it has delivered already. A joining subscriber is admitted first (from
then on an end reaches it), checked, and then catches up in a task of its own, outside the
feed's lock: a batch of history from the log, sent as fast as its transport takes it, then the
next, however far behind it started. The feed keeps its last events (and the results it sent for
them) in memory; once the subscriber is within them, the hand-over to live delivery replays them
under the lock, so live delivery never waits on a resume, and nothing is missed or sent twice.

What runs before the feed takes its next event is bounded (`LoggedFeed._deliver`); the rest
waits in each group's backlog for the lane, which serves backlogs in the process's background
share (live.share), the account that used the least of it first.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from core.cancelling import cancel_and_wait
from live.feed import Feed, by_charge
from live.replay import CHUNK as REPLAY_CHUNK
from live.replay import Allowance
from live.selection import Backlogged, Group, PayloadKey, audience_key, keyers_for
from live.source import Event, LiveSource, TopicLog
from live.subscription import Subscription
from telemetry import record, traces

if TYPE_CHECKING:
    from live.engine import Engine

logger = logging.getLogger("chat.live")

CATCH_UP_BATCH = 200
YIELD_EVERY = 8
RECENT = 64
# A subscriber catching up from `recent` gets all but this many of its events outside the lock.
HAND_OVER_EVENTS = 4
# What the results kept with one event of `recent` may add up to, beyond the live groups' own.
KEPT_BYTES_PER_EVENT = 256 * 1024
# Per event, what the groups executed before the feed takes its next event may take: each
# account (a user, or a selection shared by several) this much per user in it, and all of them
# together INLINE_TOTAL_SECONDS; the rest go to their backlogs (see LoggedFeed._deliver).
INLINE_SECONDS = 0.010
INLINE_TOTAL_SECONDS = 0.050
# Events one group's backlog may hold; past it that group is demoted to catching up from the log.
LANE_EVENTS = 32

# An event the feed remembers, with the results sent (or kept) for it.
Remembered = tuple[Event, dict[PayloadKey, bytes]]


class Replay(NamedTuple):
    """A subscriber's results for a run of events, and its position once they are sent."""

    results: list[tuple[bytes, str | None]]
    upto: int


class LoggedFeed(Feed):
    """A logged topic's feed: its position (`last_seq`), its last events (`recent`) and the
    groups that are behind (their backlogs)."""

    def __init__(self, engine: Engine, source: LiveSource) -> None:
        super().__init__(engine, source)
        assert source.log is not None
        self.log: TopicLog = source.log
        # The last events delivered, contiguous up to `last_seq`, with each group's result.
        self.recent: deque[Remembered] = deque(maxlen=RECENT)
        self.last_seq = 0
        # The groups with a backlog, served by the lane task in the background share.
        self.behind: set[Group] = set()
        self.demoted_at = -60.0
        self._lane_task: asyncio.Task[None] | None = None

    async def _subscribed(self) -> None:
        # Subscribed first, read second: nothing appended after this read can be missed.
        for event in await self.log.newest(RECENT):
            self._remember(event, {})

    async def _stopped(self) -> None:
        if self._lane_task is not None:
            await cancel_and_wait([self._lane_task])

    def admit(self, subscription: Subscription) -> None:
        if subscription.seq is None:  # from now on: the feed's head
            subscription.seq = self.last_seq
        super().admit(subscription)

    async def join(self, subscription: Subscription) -> None:
        """The subscriber catches up in a task of its own; the engine does not wait for it."""
        self._start_catching_up(subscription)

    def _start_catching_up(self, subscription: Subscription) -> None:
        subscription.catching_up = asyncio.create_task(self._catch_up_or_retry(subscription))

    async def _catch_up_or_retry(self, subscription: Subscription) -> None:
        """A resume that cannot be served now (the log unreachable mid-way) ends the transport
        retryably: the client comes back and resumes from the last result it got."""
        try:
            with traces.step("chat catch_up", subscription.selection.field):
                await self.catch_up(subscription)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("Catching up a subscriber failed (%s); asking it to retry", type(error).__name__)
            subscription.close()
            subscription.sink.try_again_later()

    async def catch_up(self, subscription: Subscription) -> None:
        """Send what the subscriber missed, then deliver to it live: batches of history paced by
        its transport and read outside the lock, then, once the rest is in `recent`, the
        hand-over under the lock, from memory."""
        sink = subscription.sink
        # What is older than `recent` is executed for this subscriber alone: paced by its user's
        # replay budget (live.replay), before the log is even read.
        allowance = Allowance(self.engine.replay, subscription.viewer.id)
        resumed_from = subscription.source.after
        while subscription.feed is self and not sink.closed:
            assert subscription.seq is not None
            if subscription.seq >= self._remembered_from():
                entries = [entry for entry in self.recent if entry[0]["seq"] > subscription.seq]
                if len(entries) > HAND_OVER_EVENTS:
                    # All but the last few from memory, outside the lock, as from the log.
                    replay = await self._results(subscription, entries[:-HAND_OVER_EVENTS], allowance)
                    self._send(subscription, replay)
                    await sink.drained()
                    continue
                # The results it lacks among the last few, executed outside the lock (and kept
                # with them for everyone after, room permitting): the hand-over finds them, and
                # executes under the lock only what arrived meanwhile.
                own = await self._prepare(subscription, entries, allowance)
                async with self.lock:
                    if subscription.feed is not self or subscription.seq < self._remembered_from():
                        continue
                    replay = await self._results(subscription, self.recent, own=own)
                    subscription.advance(replay.upto)
                    sink.history(replay.results)
                    self._hand_over(subscription)
                    if resumed_from is not None and subscription.seq is not None and subscription.seq > resumed_from:
                        record.resumed(subscription.selection.field, subscription.seq - resumed_from)
                    return
            await allowance.ensure()
            events = await self.log.after(subscription.seq, CATCH_UP_BATCH)
            if subscription.feed is not self:
                return
            if not events:  # the log has nothing newer than `recent` says: hand over
                subscription.advance(max(subscription.seq, self._remembered_from()))
                continue
            # A budget's chunk at a time: what the budget allowed goes out before it waits.
            for start in range(0, len(events), REPLAY_CHUNK):
                chunk = events[start : start + REPLAY_CHUNK]
                replay = await self._results(subscription, ((event, {}) for event in chunk), allowance)
                self._send(subscription, replay)
            await sink.drained()

    @staticmethod
    def _send(subscription: Subscription, replay: Replay) -> None:
        """A run of history to the subscriber, which is then past it."""
        subscription.advance(replay.upto)
        if replay.results:
            subscription.sink.history(replay.results)

    def _remembered_from(self) -> int:
        """Every event after this seq is in `recent` (or not yet delivered by the feed)."""
        return self.recent[0][0]["seq"] - 1 if self.recent else self.last_seq

    async def _results(
        self,
        subscription: Subscription,
        history: Iterable[Remembered],
        allowance: Allowance | None = None,
        own: Mapping[int, tuple[Event, bytes]] | None = None,
    ) -> Replay:
        """Each event's result for this subscriber after its position: its group's, when the feed
        kept it, or its own from `_prepare` (for that very event, not a revision of it), else
        executed (counted in `allowance`) and kept for the next resume. Does not move the
        subscriber: the caller advances it to `upto` when it sends the results."""
        source = subscription.source
        assert subscription.seq is not None
        upto = subscription.seq
        results = []
        executed = 0
        for event, payloads in history:
            if event["seq"] <= upto:
                continue
            upto = event["seq"]
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
        return Replay(results, upto)

    async def _prepare(
        self, subscription: Subscription, entries: list[Remembered], allowance: Allowance
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

    async def _on_event(self, event: Event) -> None:
        seq = event["seq"]
        if seq <= self.last_seq:
            return
        if seq > self.last_seq + 1:
            await self._fill(seq - 1)
        if seq == self.last_seq + 1:
            await self._deliver(event)

    async def _on_resync(self) -> None:
        await self._fill(None)

    async def _fill(self, upto: int | None) -> None:
        """Deliver the log's events after `last_seq` (up to `upto`, when given)."""
        while upto is None or self.last_seq < upto:
            events = await self.log.after(self.last_seq, CATCH_UP_BATCH)
            if not events:
                return
            for event in events:
                if upto is not None and event["seq"] > upto:
                    return
                await self._deliver(event)

    async def _deliver(self, event: Event) -> None:
        """The event to every group: one set of loaders per viewer for all of them (what one
        group read, the next finds loaded), the cheapest per user served first.

        What runs before the feed takes its next event is bounded: each group's account
        (live.selection.Group) may spend INLINE_SECONDS per user it stands for, and all of them
        INLINE_TOTAL_SECONDS. A group past its account's allowance, not yet measured, or with
        events already waiting (each group's events stay in order) gets the event in its backlog
        instead; the lane executes backlogs after, outside the lock, in at most the background
        share of the process's time (live.share), the account that used the least of it first.
        So one user's heavy selections wait behind their own, never in front of anyone else's,
        and a group more than LANE_EVENTS behind catches up from the log instead."""
        seq = event["seq"]
        payloads: dict[PayloadKey, bytes] = {}
        contexts: dict[Hashable, Any] = {}
        spent: dict[Hashable, float] = {}
        total = 0.0
        deferred: list[Group] = []
        for group in sorted(self.groups.values(), key=by_charge):
            if not group.wants(event):
                continue
            account = group.account
            allowance = INLINE_SECONDS * group.weight - spent.get(account, 0.0)
            # A group not measured yet is measured in the lane: a costly one never runs inline.
            over = group.cost > allowance or total + group.cost > INLINE_TOTAL_SECONDS
            if group.backlog or group.cost == 0.0 or over:
                deferred.append(group)
                continue
            elapsed = await self._deliver_timed(group, event, seq, payloads, contexts)
            spent[account] = spent.get(account, 0.0) + elapsed
            total += elapsed
        self._remember(event, payloads)
        for group in deferred:
            self._defer(group, (event, payloads, contexts))

    def _remember(self, event: Event, payloads: dict[PayloadKey, bytes]) -> None:
        for index, (earlier, _) in enumerate(self.recent):
            revised = self.log.revised(earlier, event)
            if revised is not None:
                self.recent[index] = (revised, {})  # its results are re-executed when asked for
        self.recent.append((event, payloads))
        self.last_seq = event["seq"]

    def _defer(self, group: Group, entry: Backlogged) -> None:
        if len(group.backlog) >= LANE_EVENTS:
            self._demote(group)
            return
        group.backlog.append(entry)
        self.behind.add(group)
        if self._lane_task is None:
            # In a context of its own: not inside the deliver span of the event that started it.
            self._lane_task = asyncio.create_task(
                self._run_lane(), name=f"lane {self.topic}", context=contextvars.Context()
            )

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
            self._start_catching_up(subscription)

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
                        # Outside the lock, after the event's own delivery was counted: on its own
                        # (a deferred group's frames are handed over later, and so measured).
                        await self._deliver_group(group, event, event["seq"], payloads, contexts, None)
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


def _keep(payloads: dict[PayloadKey, bytes], key: PayloadKey, payload: bytes) -> None:
    """Keep a resumer's result with its event of `recent` for the next resume of the same
    selection, while the event's results stay within KEPT_BYTES_PER_EVENT: a loop of resumes,
    each a new selection, would otherwise add one result per event per selection until the
    event left `recent` (in a quiet room, never)."""
    if key in payloads:
        return
    if sum(map(len, payloads.values())) + len(payload) <= KEPT_BYTES_PER_EVENT:
        payloads[key] = payload
