"""Fan-out at the cost of forwarding bytes.

Stock Ariadne runs every subscriber's selection set for every event: a room of 1,000
subscribers costs 1,000 executions and 1,000 JSON encodings per message. Here each process
holds one feed per room (one broadcast subscription), groups the room's subscribers by what
they asked for (document, operation and variables: nothing in the Message type depends on who
is looking), executes once per group per event, encodes the payload once, and hands every
subscriber of the group the same bytes behind its own operation id.

Ordering and completeness are the feed's job, once per room instead of once per subscriber:
it delivers sequence numbers in order, fills gaps from the database (out-of-order publishers,
a Redis outage announced by a `resync` event) and drops what it has already delivered.

A joining subscriber is admitted first (from then on a leave or a logOut ends it) and catches up
in a task of its own, outside the feed's lock: a batch of history from the database, sent as fast
as its socket takes it, then the next, however far behind it started. The feed keeps its last
messages in memory; once the subscriber is within them, the hand-over to live delivery replays
them under the lock without touching the database, so the room's live delivery never waits on a
resume, and there is no gap and no duplicate.

Live delivery never waits on a socket: frames go into each connection's bounded `Outbox`, drained
by its own writer task; a connection that stops reading live frames overflows it and is closed.
History is not counted against that bound: it is paced instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from ariadne.logger import log_error
from graphql import DocumentNode, ExecutionResult, GraphQLError, GraphQLSchema, execute
from starlette.websockets import WebSocket

from auth import Viewer
from db import messages
from errors import Forbidden, Unauthenticated, format_error
from execution.json import dumps
from realtime import events
from realtime.broadcast import broadcast, room_channel
from resolvers import schema
from resolvers.loaders import Loaders

logger = logging.getLogger("chat.fanout")

CATCH_UP_BATCH = 200
RECENT = 64
CLOSE_TRY_AGAIN_LATER = 1013  # both Apollo links reconnect and resume


class Outbox:
    """One connection's outgoing frames: live frames bounded, history paced, drained by a writer
    task that exists only while frames are waiting (an idle connection holds neither task nor
    buffer)."""

    __slots__ = ("_closed", "_closer", "_frames", "_history", "_history_sent", "_writer", "limit", "websocket")

    def __init__(self, websocket: WebSocket, limit: int) -> None:
        self.websocket = websocket
        self.limit = limit
        self._frames: deque[str] | None = None
        self._history: deque[str] | None = None
        self._history_sent: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, frame: str) -> None:
        if self._closed:
            return
        if self._frames is None:
            self._frames = deque()
        if len(self._frames) >= self.limit:
            logger.warning("Closing a slow consumer: %d frames unsent", self.limit)
            self.close(CLOSE_TRY_AGAIN_LATER, "Slow consumer")
            return
        self._frames.append(frame)
        self._start_writer()

    def put_history(self, frames: list[str]) -> None:
        """Frames we chose to send (a resume): not the client's backlog, so not counted against
        the limit; the caller bounds them by awaiting `history_sent` before queueing more. They go
        before live frames, so a subscription's history precedes its first live result."""
        if self._closed or not frames:
            return
        if self._history is None:
            self._history = deque()
        self._history.extend(frames)
        self._start_writer()

    async def history_sent(self) -> None:
        """Returns once the socket has taken every history frame (or the connection is gone)."""
        if self._closed or not self._history:
            return
        if self._history_sent is None:
            self._history_sent = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._history_sent)

    def close(self, code: int, reason: str) -> None:
        """Close at once, dropping what is unsent; a resuming client asks for it again."""
        if self._closed:
            return
        self._closed = True
        self._frames = self._history = None
        self._release_history_waiters()
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close(code, reason))

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    def _release_history_waiters(self) -> None:
        waiter, self._history_sent = self._history_sent, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _close(self, code: int, reason: str) -> None:
        """uvicorn sends the close frame once the client reads again; a client that never does is
        dropped by uvicorn's ping timeout, which ends this wait too. No timeout of ours: cutting
        it short would leave the client with no close code at all."""
        with suppress(Exception):
            await self.websocket.close(code=code, reason=reason)

    async def _drain(self) -> None:
        try:
            while True:
                if self._history:
                    await self.websocket.send_text(self._history.popleft())
                    if not self._history:
                        self._release_history_waiters()
                elif self._frames:
                    await self.websocket.send_text(self._frames.popleft())
                else:
                    break
            self._frames = self._history = None
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away; the handler cleans up its operations
            self._closed = True
            self._frames = self._history = None
            self._release_history_waiters()
        finally:
            self._writer = None

    async def aclose(self) -> None:
        self._closed = True
        self._release_history_waiters()
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with suppress(asyncio.CancelledError):
                await writer


@dataclass(frozen=True)
class Protocol:
    """How one WebSocket protocol frames a result and the end of an operation."""

    result_type: str  # "next" (graphql-transport-ws) or "data" (graphql-ws)

    def result(self, operation_id: str, payload: str) -> str:
        return f'{{"type":"{self.result_type}","id":{dumps(operation_id)},"payload":{payload}}}'

    def complete(self, operation_id: str) -> str:
        return f'{{"type":"complete","id":{dumps(operation_id)}}}'


TRANSPORT_WS = Protocol("next")
LEGACY_WS = Protocol("data")


@dataclass(frozen=True)
class Selection:
    """What a group of subscribers asked for: they all receive the same bytes."""

    document: DocumentNode
    query: str
    operation_name: str | None
    variables_key: str
    variables: dict[str, Any] = field(compare=False, hash=False)

    @classmethod
    def of(cls, document: DocumentNode, data: dict[str, Any]) -> Selection:
        variables = data.get("variables") or {}
        key = dumps(sorted(variables.items()))
        return cls(document, data["query"], data.get("operationName"), key, variables)

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.query, self.operation_name, self.variables_key)


@dataclass(eq=False)
class Subscription:
    """One subscriber: an operation on one connection. `aclose` is what Ariadne calls to stop it."""

    outbox: Outbox
    operation_id: str
    protocol: Protocol
    viewer: Viewer
    selection: Selection
    room: dict[str, Any]
    last_seq: int | None  # None until admitted: then the feed's head ("from now on")
    on_end: Callable[[], None] = lambda: None
    feed: RoomFeed | None = None
    prefix: str = ""
    catching_up: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.prefix = self.protocol.result(self.operation_id, "")[:-1]

    def send(self, seq: int, payload: str) -> None:
        if seq > self.seq:
            self.last_seq = seq
            self.outbox.put(self.prefix + payload + "}")

    @property
    def seq(self) -> int:
        assert self.last_seq is not None, "admitted subscriptions have a position"
        return self.last_seq

    def end(self, payload: str) -> None:
        """A last result (`payload`, its errors), then `complete`."""
        self.outbox.put(self.prefix + payload + "}")
        self.outbox.put(self.protocol.complete(self.operation_id))

    async def aclose(self) -> None:
        task = self.catching_up
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self.feed is not None:
            self.feed.remove(self)


class RoomFeed:
    def __init__(self, hub: Hub, room: dict[str, Any]) -> None:
        self.hub = hub
        self.room = room
        self.room_id = int(room["id"])
        self.groups: dict[tuple[str, str | None, str], set[Subscription]] = {}
        self.selections: dict[tuple[str, str | None, str], Selection] = {}
        self.joining: set[Subscription] = set()
        # The last messages delivered, contiguous up to `last_seq`: the hand-over to live delivery
        # replays them from memory, and a client a few messages behind resumes without a read.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.last_seq = 0
        self.lock = asyncio.Lock()
        self._stack = AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self.started: asyncio.Future[None] | None = None
        self.retired = False

    @property
    def size(self) -> int:
        return sum(len(group) for group in self.groups.values()) + len(self.joining)

    async def start(self) -> None:
        subscriber = await self._stack.enter_async_context(broadcast.subscribe(room_channel(self.room_id)))
        # Subscribed first, read second: nothing committed after this read can be missed.
        for message in await messages.newest(self.room_id, RECENT):
            self._remember({**message, "room": self.room})
        self._task = asyncio.create_task(self._run(subscriber), name=f"room-feed-{self.room_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    def admit(self, subscription: Subscription) -> None:
        """From now on a leave or a logOut ends it; it receives nothing until `catch_up` hands it
        over to live delivery."""
        if subscription.last_seq is None:
            subscription.last_seq = self.last_seq
        subscription.feed = self
        self.joining.add(subscription)

    async def catch_up(self, subscription: Subscription) -> None:
        """Send what the subscriber missed, then deliver to it live: batches of history paced by
        its socket and read outside the lock, then, once the rest is in `recent`, the hand-over
        under the lock, from memory."""
        outbox = subscription.outbox
        while subscription.feed is self and not outbox.closed:
            if subscription.seq >= self._remembered_from():
                async with self.lock:
                    if subscription.feed is not self or subscription.seq < self._remembered_from():
                        continue
                    outbox.put_history(await self._frames(subscription, self.recent))
                    self._hand_over(subscription)
                    return
            rows = await messages.after_seq(self.room_id, subscription.seq, CATCH_UP_BATCH)
            if subscription.feed is not self:
                return
            outbox.put_history(await self._frames(subscription, [{**row, "room": self.room} for row in rows]))
            await outbox.history_sent()

    def _remembered_from(self) -> int:
        """Every message after this seq is in `recent` (or not yet delivered by the feed)."""
        return self.recent[0]["seq"] - 1 if self.recent else self.last_seq

    async def _frames(self, subscription: Subscription, history: Iterable[dict[str, Any]]) -> list[str]:
        frames = []
        for message in history:
            if message["seq"] > subscription.seq:
                payload = await self.hub.payload(subscription.selection, message)
                subscription.last_seq = message["seq"]
                frames.append(subscription.prefix + payload + "}")
        return frames

    def _hand_over(self, subscription: Subscription) -> None:
        self.joining.discard(subscription)
        subscription.catching_up = None
        key = subscription.selection.key
        self.groups.setdefault(key, set()).add(subscription)
        # The group's one Selection: this subscriber's own copy of the query text and variables
        # is let go.
        subscription.selection = self.selections.setdefault(key, subscription.selection)

    def remove(self, subscription: Subscription) -> None:
        if subscription in self.joining:
            self.joining.discard(subscription)
        else:
            key = subscription.selection.key
            group = self.groups.get(key)
            if group is None or subscription not in group:
                return
            group.discard(subscription)
            if not group:
                del self.groups[key]
                del self.selections[key]
        subscription.feed = None
        if not self.groups and not self.joining:
            self.hub.retire(self)

    async def _run(self, subscriber: Any) -> None:
        async for event in subscriber:
            try:
                async with self.lock:
                    await self._handle(events.decode(event.message))
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. Postgres unreachable while filling a gap: the next event retries
                logger.exception("Room %s: delivering an event failed", self.room_id)

    async def _handle(self, data: dict[str, Any]) -> None:
        kind = data["type"]
        if kind == events.MESSAGE:
            seq = data["message"]["seq"]
            if seq <= self.last_seq:
                return
            if seq == self.last_seq + 1:
                await self._deliver({**data["message"], "room": data["room"], "sender": data["sender"]})
                return
            upto: int | None = seq
        elif kind == events.RESYNC:
            upto = None
        elif kind == events.LEFT:
            self._end(lambda s: s.viewer.id == data["user_id"], Forbidden("You left this room."))
            return
        elif kind == events.REVOKED:
            self._end(lambda s: s.viewer.token_hash == data["token_hash"], Unauthenticated("Signed out."))
            return
        else:
            return
        async for message in self._history(self.last_seq, upto):
            await self._deliver(message)

    async def _deliver(self, message: dict[str, Any]) -> None:
        seq = message["seq"]
        for key, group in list(self.groups.items()):
            payload = await self.hub.payload(self.selections[key], message)
            for subscription in list(group):
                subscription.send(seq, payload)
        self._remember(message)

    def _remember(self, message: dict[str, Any]) -> None:
        self.recent.append(message)
        self.last_seq = message["seq"]

    def _end(self, matches: Callable[[Subscription], bool], error: GraphQLError) -> None:
        """End the subscriptions a membership or token change no longer allows."""
        payload = dumps({"errors": [format_error(error)]})
        ending = [s for s in self.joining if matches(s)]
        ending += [s for group in self.groups.values() for s in group if matches(s)]
        for subscription in ending:
            self.remove(subscription)
            subscription.end(payload)
            subscription.on_end()

    async def _history(self, after: int, upto: int | None):  # type: ignore[no-untyped-def]
        """Messages after `after` (up to `upto`), oldest first, with their senders."""
        while upto is None or after < upto:
            rows = await messages.after_seq(self.room_id, after, CATCH_UP_BATCH)
            rows = [row for row in rows if upto is None or row["seq"] <= upto]
            if not rows:
                return
            for row in rows:
                yield {**row, "room": self.room}
            after = rows[-1]["seq"]


class Hub:
    """This process's room feeds."""

    def __init__(self, schema: GraphQLSchema, logger_name: str = "chat.graphql") -> None:
        self.schema = schema
        self.logger_name = logger_name
        self.feeds: dict[int, RoomFeed] = {}

    async def admit(self, subscription: Subscription) -> RoomFeed:
        """Into its room's feed, started if need be (one broadcast subscription per room)."""
        room_id = int(subscription.room["id"])
        while True:
            feed = self.feeds.get(room_id)
            if feed is None:
                feed = self.feeds[room_id] = RoomFeed(self, subscription.room)
                feed.started = asyncio.ensure_future(feed.start())
            assert feed.started is not None
            try:
                await asyncio.shield(feed.started)
            except BaseException:
                if self.feeds.get(room_id) is feed:
                    del self.feeds[room_id]
                raise
            if not feed.retired:  # else it was retired meanwhile: the room's next feed
                feed.admit(subscription)
                return feed

    def retire(self, feed: RoomFeed) -> None:
        feed.retired = True
        if self.feeds.get(feed.room_id) is feed:
            del self.feeds[feed.room_id]
        task = asyncio.ensure_future(feed.stop())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def payload(self, selection: Selection, message: dict[str, Any]) -> str:
        """Execute a selection once for a message and encode the result once."""
        context = {"request": None, "viewer": None, "loaders": Loaders()}
        result = execute(
            self.schema,
            selection.document,
            root_value=message,
            context_value=context,
            variable_values=selection.variables,
            operation_name=selection.operation_name,
        )
        if isawaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            for error in result.errors:
                log_error(error, self.logger_name)
            payload["errors"] = [format_error(error) for error in result.errors]
        return dumps(payload)

    async def close(self) -> None:
        for feed in list(self.feeds.values()):
            await feed.stop()
        self.feeds.clear()


hub = Hub(schema)
