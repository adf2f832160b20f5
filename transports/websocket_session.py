"""Helpers both GraphQL-over-WebSocket protocols call (transports.transport_ws and
transports.legacy_ws hold the state machines; nothing here calls back into them).

A `WebSocketSession` is one connection's state: its outbox, its viewer, its running operations
and the connection slots it holds. It reads messages, authenticates a `connection_init`
payload, counts the viewer's connection slot, starts and stops operations, and ends them all
when the connection is over. Every frame it sends, and every close code and reason, comes from
the protocol: one operation's frames as an `OperationFrames`, the closes as `Closes`.

A connection acknowledged for a user holds one of that user's connection slots
(MAX_CONNECTIONS_PER_USER, live.quota) from the acknowledgement until it closes, subscribed
or idle: past the limit its connection_init is refused, each protocol in its own way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from graphql import OperationType
from starlette.websockets import WebSocket

from execution.operations import Request, is_unavailable
from identity.auth import Viewer
from live.quota import CONNECTIONS, Slot
from telemetry import record
from transports.operations import (
    INTERNAL_ERROR,
    LiveServer,
    Operation,
    TryAgainLater,
    execute_single,
    start_subscription,
    token_in,
)
from transports.outbox import DirectWriter, WebSocketOutbox

logger = logging.getLogger("chat.websocket")


class OperationFrames(Protocol):
    """One operation's frames, as its protocol builds them."""

    def result(self, payload: bytes) -> bytes:
        """A result (`next` on graphql-transport-ws, `data` on graphql-ws)."""

    def complete(self) -> bytes:
        """The operation's end."""

    def refusal(self, errors: list[dict]) -> tuple[bytes, ...]:
        """The frames that refuse the operation with these errors."""


@dataclass(frozen=True, slots=True)
class Closes:
    """The close codes and reasons of the closes a session makes by itself, as the protocol words them."""

    try_again_later: tuple[int, str]  # the database is away: reconnect and resume
    slow_consumer: tuple[int, str]  # the client let its outbox fill up
    token_expired: tuple[int, str]  # a host JWT expired: reconnect with a fresh one
    transport: str  # the protocol's chat.transport (telemetry.record)


class InitDeadline:
    """The connection_init deadline both protocols keep: once started, unless stopped first (at
    connection_init), it closes the session with the protocol's `close` after INIT_TIMEOUT."""

    __slots__ = ("_close", "_session", "timer")

    def __init__(self, session: WebSocketSession, close: tuple[int, str]) -> None:
        self._session = session
        self._close = close
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.timer = asyncio.get_running_loop().call_later(self._session.server.init_timeout, self.expired)

    def expired(self) -> None:
        self.timer = None
        if not self._session.acknowledged:
            self._session.close(*self._close)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class WebSocketSession:
    __slots__ = (
        "acknowledged",
        "closes",
        "connection_slot",
        "earlier_slots",
        "opened",
        "operations",
        "outbox",
        "presence",
        "server",
        "viewer",
        "websocket",
    )

    def __init__(self, server: LiveServer, websocket: WebSocket, direct: DirectWriter | None, closes: Closes) -> None:
        self.server = server
        self.websocket = websocket
        self.closes = closes
        self.outbox = WebSocketOutbox(websocket, direct, server.send_queue, closes.slow_consumer)
        self.acknowledged = False
        self.viewer: Viewer | None = None
        self.operations: dict[str, Operation] = {}
        self.presence: str | None = None  # this connection's key in the presence sets
        # One of its user's connection slots, from the acknowledgement until it closes.
        self.connection_slot: Slot | None = None
        self.earlier_slots: tuple[Slot, ...] = ()  # of users it was acknowledged as before
        self.opened = record.connection_opened(closes.transport)

    @property
    def transport(self) -> str:
        return self.closes.transport

    async def serve(self, handle: Callable[[Mapping[str, Any]], Awaitable[None]]) -> None:
        """Hands each message to the protocol's `handle` until the client is gone. After we
        close, messages are read and dropped until uvicorn reports the disconnect, which it does
        once our close frame is out (returning sooner would cut a slow reader off without a
        code). Nothing of a message outlives its handling: an idle connection holds none, and
        no coroutine waits under this one's (one frame fewer held by every open connection)."""
        receive, outbox = self.websocket.receive, self.outbox
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if not outbox.closed:
                await handle(message)
            del message

    def put(self, *frames: bytes) -> None:
        for frame in frames:
            self.outbox.put(frame)

    def close(self, code: int, reason: str) -> None:
        self.outbox.close(code, reason)

    def valid_id(self, operation_id: Any) -> TypeGuard[str]:
        """A non-empty string of at most `max_operation_id_bytes` in UTF-8: an operation's id is
        kept for its whole life (in its frames too), so its size is ours to bound."""
        if not isinstance(operation_id, str) or not operation_id:
            return False
        limit = self.server.max_operation_id_bytes
        return len(operation_id) <= limit and len(operation_id.encode("utf-8", "surrogatepass")) <= limit

    async def authenticate(self, payload: Any) -> Viewer | None:
        """The viewer of a `connection_init` payload, or None. Raises TryAgainLater when it cannot
        be told now (e.g. Postgres unreachable: the client should retry, not give up)."""
        try:
            viewer = await self.server.authenticate(token_in(payload))
        except Exception as error:
            logger.exception("connection_init failed")
            raise TryAgainLater from error
        self.viewer = viewer
        return viewer

    async def hold_connection_slot(self, viewer: Viewer) -> bool:
        """One of the viewer's connection slots, held until the connection closes (its
        subscriptions then need none of their own); False when the viewer holds
        MAX_CONNECTIONS_PER_USER already, across every worker and dyno: the protocol then refuses
        connection_init and closes. One Redis round trip (the quota's script), taken before the
        connection sets anything up (its ack, keepalives, presence), so a refusal is cheap.

        A connection acknowledged again as the same user keeps its slot; as another user (the
        legacy protocol allows a second connection_init) it takes that user's as well, and keeps
        the first, whose subscriptions may still run on it."""
        quota = self.server.quota
        held = self.connection_slot
        if quota is None or (held is not None and held.user == viewer.id):
            return True
        slot = await quota.take(CONNECTIONS, viewer.id)
        if slot is None:
            return False
        if held is not None:
            self.earlier_slots = (*self.earlier_slots, held)
        self.connection_slot = slot
        return True

    @property
    def connection_limit(self) -> int:
        """MAX_CONNECTIONS_PER_USER, for a refusal to name (only when slots are counted)."""
        assert self.server.quota is not None
        return self.server.quota.limits[CONNECTIONS]

    def acknowledge(self, keepalive: bytes) -> None:
        """connection_init accepted (its ack is sent by the protocol): `keepalive` from now on
        on the keepalive interval, and the user online."""
        self.acknowledged = True
        self.server.keepalive.add(self.outbox, self.outbox.put, keepalive)
        if self.server.presence is not None and self.viewer is not None and self.presence is None:
            self.presence = self.server.presence.connected(self.viewer)

    async def start(self, operation_id: str, payload: dict[str, Any], frames: OperationFrames) -> None:
        """Runs an operation to its end, framed by `frames`. A subscription starts before the
        connection's next message is handled (anything the client hears after sending it, a
        pong, another operation's answer, means it is in place); a query or mutation runs beside
        what comes next."""
        operation = self.operations[operation_id] = Operation()
        request = self.server.operations.prepare(payload)
        if isinstance(request, list):
            del self.operations[operation_id]
            self.put(*frames.refusal(request))
        elif request.kind == OperationType.SUBSCRIPTION:
            await self._run(operation_id, operation, request, frames)
        else:
            operation.task = asyncio.create_task(self._run(operation_id, operation, request, frames))

    def stop(self, operation_id: Any) -> None:
        """The client ended the operation: nothing more of it is sent."""
        operation = self.operations.pop(operation_id, None) if isinstance(operation_id, str) else None
        if operation is not None:
            operation.stop()

    def ended(self, operation_id: str, operation: Operation) -> None:
        """The operation is over by itself (the client may reuse its id)."""
        if self.operations.get(operation_id) is operation:
            del self.operations[operation_id]

    def try_again_later(self) -> None:
        self.close(*self.closes.try_again_later)

    async def end(self) -> None:
        """The connection is over: every operation stops, keepalives and presence end, the
        connection slots go back, the outbox lets go of everything."""
        self.server.keepalive.discard(self.outbox)
        if self.presence is not None and self.server.presence is not None:
            self.server.presence.disconnected(self.presence)
        operations, self.operations = self.operations, {}
        for operation in operations.values():
            operation.stop()
        if self.connection_slot is not None:
            self.connection_slot.release()
        for slot in self.earlier_slots:
            slot.release()
        await self.outbox.aclose()
        record.connection_closed(self.closes.transport, self.opened, self.outbox.close_reason)

    async def _run(self, operation_id: str, operation: Operation, request: Request, frames: OperationFrames) -> None:
        try:
            if request.kind == OperationType.SUBSCRIPTION:
                await self._subscribe(operation_id, operation, request, frames)
                return
            viewer = await self.server.revalidate(self.viewer) if self.viewer is not None else None
            context = self.server.context(viewer, self.websocket, None)
            result = await execute_single(self.server, request, context, self.transport)
            if self.operations.get(operation_id) is operation:
                self.put(frames.result(result), frames.complete())
        except TryAgainLater:
            self.try_again_later()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if is_unavailable(error):
                self.try_again_later()
            else:
                logger.exception("Operation %s failed", operation_id)
                self.put(*frames.refusal([INTERNAL_ERROR]))
        self.ended(operation_id, operation)

    async def _subscribe(
        self, operation_id: str, operation: Operation, request: Request, frames: OperationFrames
    ) -> None:
        sink = OperationSink(self, operation_id, operation, frames)
        context = self.server.context(self.viewer, self.websocket, None)
        outcome = await start_subscription(self.server, request, context, sink, self)
        if outcome is None:  # ended while starting, and told so
            return
        if isinstance(outcome, list):
            self.put(*frames.refusal(outcome))
            self.ended(operation_id, operation)
            return
        operation.task = None
        if self.operations.get(operation_id) is not operation:  # stopped by the client meanwhile
            outcome.close()
            return
        operation.subscription = outcome


class OperationSink:
    """One subscription's way to its client (the live engine's Sink): its results framed by its
    protocol's `OperationFrames`, into the connection's outbox."""

    __slots__ = ("frames", "operation", "operation_id", "session")

    def __init__(
        self, session: WebSocketSession, operation_id: str, operation: Operation, frames: OperationFrames
    ) -> None:
        self.session = session
        self.operation_id = operation_id
        self.operation = operation
        self.frames = frames

    @property
    def closed(self) -> bool:
        return self.session.outbox.closed

    def send(self, payload: bytes, event_id: str | None) -> None:
        self.session.outbox.put(self.frames.result(payload))

    def history(self, results: list[tuple[bytes, str | None]]) -> None:
        self.session.outbox.put_history([self.frames.result(payload) for payload, _ in results])

    async def drained(self) -> None:
        await self.session.outbox.drained()

    def end(self, payload: bytes) -> None:
        self.session.put(self.frames.result(payload), self.frames.complete())
        self.session.ended(self.operation_id, self.operation)

    def try_again_later(self) -> None:
        self.session.ended(self.operation_id, self.operation)
        self.session.try_again_later()

    def token_expired(self, payload: bytes) -> None:
        """The whole connection closes (transports.close_codes.TOKEN_EXPIRED): its client
        reconnects with a fresh token and resubscribes."""
        self.session.ended(self.operation_id, self.operation)
        self.session.close(*self.session.closes.token_expired)
