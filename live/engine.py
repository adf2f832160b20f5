"""The live engine: every subscription field whose source returns a `LiveSource`, served at the
cost of forwarding bytes. This module is its registry: this process's feeds by topic, how a
subscriber is admitted, checked and joined, how subscriptions end, and how an event's result is
executed and encoded.

Each process holds one feed per topic (one broadcast subscription), of the topic's kind
(live.feed): a logged topic's (live.logged) delivers its events in order without gaps and lets
a subscriber resume; a state topic's (live.state) re-reads the state on every change and when
it expires; a plain one delivers each event as it comes; one that follows other topics
(live.following) delivers their events too, through one relay per followed topic per process.
What the topic's messages look like is live.messages. A feed groups its subscribers by what
they asked for (document, operation, variables; live.selection) and, when the selection reads a
field whose value depends on who asks, by viewer too; it executes each group's selection once
per event, encodes the result once, and hands every subscriber of the group the same bytes.

What depends on who asks is told apart per event, not per viewer: a field that reads the viewer
comes with an audience function, `(event) -> keyer`, where the keyer gives a viewer's key for
that event, or is None when every viewer sees the same (live.source); a group's subscribers are
split by those keys for each event (a reaction's `mine` differs for the few who reacted, and for
no one on an event without reactions), executing once per distinct key. Where every viewer's
result differs only in leaves that depend on who asks (a room's unread count), or in objects
whose only difference is those leaves and whether they are null (`viewer_shells`), an event's
one execution serves them all and each viewer's own leaves are written in (live.following, for
the many feeds that follow one topic: a room's members' `myRooms`).

An event's result goes through the execute-and-format path every operation takes
(execution.operations): errors formatted and logged, encoded once, and a result longer than
`max_payload_bytes` replaced by a RESPONSE_TOO_LARGE error.

Subscriptions end when their transport goes, when a control message on their topic ends their
viewer (a member left), when their token is revoked, or when a re-check after a reconnect
refuses them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from graphql import GraphQLError, GraphQLSchema, execute_subscription_event

from core.broadcast import ChannelBroadcast
from core.cancelling import cancel_and_wait
from execution.operations import ErrorFormatter, Results, executed
from identity.auth import Viewer
from live.feed import Feed, PlainFeed
from live.following import FollowingFeed, Relays
from live.logged import LoggedFeed
from live.replay import ReplayBudget
from live.selection import GroupKey, Selection, Template, fields_read
from live.share import COSTS_KEPT, WorkShare
from live.source import Audience, Event, LiveSource
from live.state import StateFeed
from live.subscription import Sink, Subscription

__all__ = ["Engine", "Selection", "Sink", "Subscription"]

logger = logging.getLogger("chat.live")

# A selection whose execution takes less is resumed outside the background share.
CHEAP_SECONDS = 0.003


ContextFactory = Callable[[Viewer | None], dict[str, Any]]


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
        viewer_shells: Iterable[tuple[str, str]] = (),
        error_formatter: ErrorFormatter,
        logger_name: str = "chat.graphql",
        debug: bool = False,
        feed_queue: int | None = None,
        replay: ReplayBudget | None = None,
        max_payload_bytes: int | None = None,
    ) -> None:
        """`viewer_fields`: the fields (type, field) whose value depends on who asks, and their
        audiences; `viewer_shells`: those of them, objects, whose value for one viewer differs
        from another's only in whether it is null and in the viewer fields under it (what else
        they hold is everyone's; LeanExecutor.patches). `max_payload_bytes`: an event's encoded
        result longer than this goes out as a RESPONSE_TOO_LARGE error instead
        (MAX_RESPONSE_BYTES, as for queries and mutations)."""
        self.schema = schema
        self.broadcast = broadcast
        self.channel_prefix = channel_prefix
        self.context = context
        self.viewer_fields = dict(viewer_fields)
        self._patched_fields = frozenset(self.viewer_fields)
        self._shells = frozenset(viewer_shells)
        # An event's result goes out as every operation's does (execution.operations).
        self.results = Results(error_formatter, debug, logger_name, max_payload_bytes, noun="result")
        # Messages waiting for one feed; past it the feed resyncs (core.broadcast).
        self.feed_queue = feed_queue
        self.replay = replay
        self.feeds: dict[str, Feed] = {}
        self.by_token: dict[str, set[Subscription]] = {}
        self._audiences: dict[str, tuple[Audience, ...]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.share = WorkShare()
        # Topics followed by topics of this process (live.following), one broadcast subscription each.
        self.relays = Relays(self)
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
        await feed.join(subscription)
        return subscription

    async def _feed(self, source: LiveSource) -> Feed:
        """The topic's feed, started if need be (one broadcast subscription per topic)."""
        while True:
            feed = self.feeds.get(source.topic)
            if feed is None:
                feed = self.feeds[source.topic] = _feed_of_kind(source)(self, source)
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
        if context is None:
            context = self.context(viewer)
        data = selection.planned(self.schema, event, context)
        if data is not None:
            return self.encode(data)
        executor = selection.executor_for(self.schema, event, context)
        return self.results.encode(await executed(executor, execute_subscription_event))

    def template(self, selection: Selection, event: Event, context: dict[str, Any]) -> Template | None:
        """An event's one execution (for `context`'s viewer) that every other viewer's result
        is made from by writing in their own values, where it can be (Selection.template)."""
        return selection.template(self.schema, event, context, self._patched_fields, self._shells)

    def encode(self, data: dict[str, Any]) -> bytes:
        """A result's data encoded as `execute` encodes it."""
        return self.results.encode_payload({"data": data})

    def end_where(
        self, subscriptions: Iterable[Subscription], matches: Callable[[Subscription], bool], error: dict
    ) -> None:
        """End the subscriptions that `matches`, with `error` (already formatted)."""
        payload = orjson.dumps({"errors": [error]})
        for subscription in [s for s in subscriptions if matches(s)]:
            subscription.end(payload)

    def end_user(self, user_id: int, error: GraphQLError) -> None:
        """Every subscription of the user ends, on every topic (all their tokens are revoked)."""
        subscriptions = [s for held in self.by_token.values() for s in held]
        self.end_where(subscriptions, lambda s: s.viewer.id == user_id, self.results.refusal(error))

    def end_token(self, token_hash: str, error: GraphQLError) -> None:
        """A revoked token's subscriptions end, on every topic."""
        subscriptions = list(self.by_token.get(token_hash, ()))
        self.end_where(subscriptions, lambda _s: True, self.results.refusal(error))

    def expire_token(self, token_hash: str, error: GraphQLError) -> None:
        """An expired token's subscriptions end, on every topic; a host JWT's through its sink's
        `token_expired` (a WebSocket closes so its client comes back with a fresh token)."""
        payload = orjson.dumps({"errors": [self.results.refusal(error)]})
        for subscription in list(self.by_token.get(token_hash, ())):
            if subscription.viewer.reconnects:
                subscription.close()
                subscription.sink.token_expired(payload)
            else:
                subscription.end(payload)

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
            subscription.end(orjson.dumps({"errors": [self.results.refusal(refusal)]}))

    def audiences(self, selection: Selection) -> tuple[Audience, ...]:
        """The audience functions of the fields the selection reads that depend on who asks."""
        if not self.viewer_fields:
            return ()
        found = self._audiences.get(selection.query)
        if found is None:
            read = fields_read(self.schema, selection.document, frozenset(self.viewer_fields))
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
        await self.relays.close()
        await cancel_and_wait(self._tasks)


def _feed_of_kind(source: LiveSource) -> type[Feed]:
    """The feed for the topic's kind, as its first source tells it."""
    if source.log is not None:
        return LoggedFeed
    if source.follows is not None:
        return FollowingFeed
    if source.state is not None:
        return StateFeed
    return PlainFeed
