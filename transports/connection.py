"""What a GraphQL-over-WebSocket connection does the same on both protocols: accept with its
subprotocol, read messages until the client is gone, time out a missing `connection_init`,
authenticate, and run each operation (a query or mutation to its end, a subscription on the live
engine). The protocol modules hold their state machines: which message means what, and how each
outcome is framed.

A connection acknowledged for a user holds one of that user's connection slots
(MAX_CONNECTIONS_PER_USER, live.quota) from the acknowledgement until it closes, subscribed
or idle: past the limit its connection_init is refused, each protocol in its own way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, TypeGuard

import orjson
from graphql import OperationType
from starlette.websockets import WebSocket

from execution.operations import Request, is_unavailable
from identity.auth import Viewer
from live.quota import CONNECTIONS, TOO_MANY_CONNECTIONS, Slot, too_many_connections
from serving.uvicorn_protocols import LeanWebSocketProtocol
from transports import close_codes
from transports.operations import (
    INTERNAL_ERROR,
    LiveServer,
    Operation,
    TryAgainLater,
    execute_single,
    start_subscription,
    token_in,
)
from transports.outbox import OperationSink, WebSocketOutbox

logger = logging.getLogger("chat.websocket")


class Connection:
    SUBPROTOCOL: str
    RESULT: str  # the type of a result message: `next` or `data`

    __slots__ = (
        "_init_timer",
        "acknowledged",
        "connection_slot",
        "earlier_slots",
        "operations",
        "outbox",
        "presence",
        "server",
        "viewer",
        "websocket",
    )

    def __init__(self, server: LiveServer, websocket: WebSocket, direct: LeanWebSocketProtocol | None) -> None:
        self.server = server
        self.websocket = websocket
        self.outbox = WebSocketOutbox(websocket, direct, server.send_queue)
        self.acknowledged = False
        self.viewer: Viewer | None = None
        self.operations: dict[str, Operation] = {}
        self._init_timer: asyncio.TimerHandle | None = None
        self.presence: str | None = None  # this connection's key in the presence sets
        # One of its user's connection slots, from the acknowledgement until it closes.
        self.connection_slot: Slot | None = None
        self.earlier_slots: tuple[Slot, ...] = ()  # of users it was acknowledged as before

    async def serve(self) -> None:
        await self.websocket.accept(self.SUBPROTOCOL)
        loop = asyncio.get_running_loop()
        self._init_timer = loop.call_later(self.server.init_timeout, self._init_timed_out)
        try:
            # Until the client is gone: after we close, uvicorn reports the disconnect once our
            # close frame is out (returning sooner would cut a slow reader off without a code).
            # Nothing of a message outlives its handling: an idle connection holds none.
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if not self.outbox.closed:
                    await self.handle(message)
                del message
        finally:
            self._cancel_init_timer()
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

    async def handle(self, received: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def refuse(self, operation_id: str, errors: list[dict]) -> None:
        """The errors that refused an operation, as the protocol frames them."""
        raise NotImplementedError

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
        """The viewer of a `connection_init` payload, or None (the connection is closed then)."""
        self._cancel_init_timer()
        try:
            viewer = await self.server.authenticate(token_in(payload))
        except Exception:  # e.g. Postgres unreachable: the client should retry, not give up
            logger.exception("connection_init failed")
            self.close(close_codes.TRY_AGAIN_LATER, "Try again later")
            return None
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

    def too_many_connections(self) -> tuple[dict, str]:
        """The refusal of a connection_init past MAX_CONNECTIONS_PER_USER: the error and the
        close reason (under the 123 bytes a close frame allows), both naming the code."""
        assert self.server.quota is not None
        limit = self.server.quota.limits[CONNECTIONS]
        return too_many_connections(limit), f"{TOO_MANY_CONNECTIONS}: at most {limit} per user"

    def acknowledge(self, ack: bytes, keepalive: bytes) -> None:
        """connection_init accepted: the ack, keepalives from now on, and the user online."""
        self.acknowledged = True
        self.outbox.put(ack)
        self.server.keepalive.add(self.outbox, self.outbox.put, keepalive)
        if self.server.presence is not None and self.viewer is not None and self.presence is None:
            self.presence = self.server.presence.connected(self.viewer)

    async def start(self, operation_id: str, payload: dict[str, Any]) -> None:
        """A subscription starts before the connection's next message is handled (anything the
        client hears after sending it, a pong, another operation's answer, means it is in
        place); a query or mutation runs beside what comes next."""
        operation = self.operations[operation_id] = Operation()
        request = self.server.operations.prepare(payload)
        if isinstance(request, list):
            del self.operations[operation_id]
            self.refuse(operation_id, request)
        elif request.kind == OperationType.SUBSCRIPTION:
            await self._run(operation_id, operation, request)
        else:
            operation.task = asyncio.create_task(self._run(operation_id, operation, request))

    def result(self, operation_id: str, payload: bytes) -> bytes:
        return (
            b'{"type":"' + self.RESULT.encode() + b'","id":' + _quoted(operation_id) + b',"payload":' + payload + b"}"
        )

    @staticmethod
    def complete(operation_id: str) -> bytes:
        return b'{"type":"complete","id":' + _quoted(operation_id) + b"}"

    async def _run(self, operation_id: str, operation: Operation, request: Request) -> None:
        try:
            if request.kind == OperationType.SUBSCRIPTION:
                await self._subscribe(operation_id, operation, request)
                return
            else:
                viewer = await self.server.revalidate(self.viewer) if self.viewer is not None else None
                result = await execute_single(self.server, request, self.server.context(viewer, self.websocket, None))
                if self.operations.get(operation_id) is operation:
                    self.outbox.put(self.result(operation_id, result))
                    self.outbox.put(self.complete(operation_id))
        except TryAgainLater:
            self.close(close_codes.TRY_AGAIN_LATER, "Try again later")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if is_unavailable(error):
                self.close(close_codes.TRY_AGAIN_LATER, "Try again later")
            else:
                logger.exception("Operation %s failed", operation_id)
                self.refuse(operation_id, [INTERNAL_ERROR])
        if self.operations.get(operation_id) is operation:
            del self.operations[operation_id]

    async def _subscribe(self, operation_id: str, operation: Operation, request: Request) -> None:
        def ended() -> None:
            if self.operations.get(operation_id) is operation:
                del self.operations[operation_id]

        sink = OperationSink(self.outbox, operation_id, self.RESULT, ended)
        context = self.server.context(self.viewer, self.websocket, None)
        outcome = await start_subscription(self.server, request, context, sink, self)
        if outcome is None:  # ended while starting, and told so
            return
        if isinstance(outcome, list):
            self.refuse(operation_id, outcome)
            ended()
            return
        operation.task = None
        if self.operations.get(operation_id) is not operation:  # stopped by the client meanwhile
            outcome.close()
            return
        operation.subscription = outcome

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if not self.acknowledged:
            self.close(close_codes.INIT_TIMEOUT, "Connection initialisation timeout")

    def _cancel_init_timer(self) -> None:
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None


def _quoted(operation_id: str) -> bytes:
    return orjson.dumps(operation_id)
