"""graphql-transport-ws: the protocol of the graphql-ws library and Apollo's GraphQLWsLink.

The state machine of one connection, modelled on graphql-ws's own `server.ts` and read top to
bottom below (accept, the init timeout, the dispatch on message type, each message, the cleanup):

    connection_init  -> connection_ack (4403 without a valid token, 4429 when repeated,
                        4408 when it does not come in time, 1008 "TOO_MANY_CONNECTIONS: ..."
                        when its user holds MAX_CONNECTIONS_PER_USER connections already)
    ping / pong      -> pong / nothing
    subscribe        -> next* then complete, or error (4400 malformed, 4401 before the ack,
                        4409 for an id still running)
    complete         -> the operation stops
    anything else    -> 4400

The server pings on the keepalive interval. A subscription that cannot start because the
database is away closes the connection with 1013, on which the client reconnects and resumes;
so does a client too slow to read its live frames. Every frame and close of this protocol is
built here; transports.websocket_session holds what both WebSocket protocols share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.websockets import WebSocket

from execution.operations import valid_payload
from live.quota import TOO_MANY_CONNECTIONS
from telemetry import record
from transports import close_codes
from transports.operations import LiveServer, TryAgainLater, decode, too_many
from transports.outbox import DirectWriter
from transports.websocket_session import Closes, InitDeadline, WebSocketSession

SUBPROTOCOL = "graphql-transport-ws"

ACK = b'{"type":"connection_ack"}'
PING = b'{"type":"ping"}'
PONG = b'{"type":"pong"}'
CLOSES = Closes(
    try_again_later=(close_codes.TRY_AGAIN_LATER, "Try again later"),
    slow_consumer=(close_codes.TRY_AGAIN_LATER, "Slow consumer"),
    token_expired=(close_codes.TOKEN_EXPIRED, "Token expired"),
    transport=record.GRAPHQL_TRANSPORT_WS,
)


class Frames:
    """One operation's frames: `next`, `complete`, and `error` for a refusal."""

    __slots__ = ("_complete", "_next", "operation_id")

    def __init__(self, operation_id: str) -> None:
        quoted = orjson.dumps(operation_id)
        self.operation_id = operation_id
        self._next = b'{"type":"next","id":' + quoted + b',"payload":'
        self._complete = b'{"type":"complete","id":' + quoted + b"}"

    def result(self, payload: bytes) -> bytes:
        return self._next + payload + b"}"

    def complete(self) -> bytes:
        return self._complete

    def refusal(self, errors: list[dict]) -> tuple[bytes, ...]:
        return (orjson.dumps({"type": "error", "id": self.operation_id, "payload": errors}),)


class TransportWSConnection:
    SUBPROTOCOL = SUBPROTOCOL
    __slots__ = ("init_deadline", "init_received", "session")

    def __init__(self, server: LiveServer, websocket: WebSocket, direct: DirectWriter | None) -> None:
        self.session = WebSocketSession(server, websocket, direct, CLOSES)
        self.init_received = False
        self.init_deadline = InitDeadline(self.session, (close_codes.INIT_TIMEOUT, "Connection initialisation timeout"))

    async def serve(self) -> None:
        session = self.session
        await session.websocket.accept(SUBPROTOCOL)
        # 4408 unless a connection_init arrives within INIT_TIMEOUT (on_connection_init stops it).
        self.init_deadline.start()
        try:
            await session.serve(self.handle)
        finally:
            self.init_deadline.stop()
            await session.end()  # every operation stops; slots, keepalive and presence let go

    async def handle(self, received: Mapping[str, Any]) -> None:
        message = decode(received)
        if message is None:
            self.session.close(close_codes.INVALID_MESSAGE, "Invalid message received")
            return
        kind = message["type"]
        if kind == "connection_init":
            await self.on_connection_init(message.get("payload"))
        elif kind == "ping":
            self.session.put(PONG)
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self.on_subscribe(message)
        elif kind == "complete":
            self.session.stop(message.get("id"))
        else:
            self.session.close(close_codes.INVALID_MESSAGE, f"Unexpected message of type {kind}")

    async def on_connection_init(self, payload: Any) -> None:
        session = self.session
        if self.init_received:
            session.close(close_codes.TOO_MANY_INITIALISATION_REQUESTS, "Too many initialisation requests")
            return
        self.init_received = True
        self.init_deadline.stop()
        try:
            viewer = await session.authenticate(payload)
        except TryAgainLater:
            session.close(*CLOSES.try_again_later)
            return
        if viewer is None:
            session.close(close_codes.FORBIDDEN, "Forbidden")
            return
        if not await session.hold_connection_slot(viewer):
            # A close code graphql-ws's client does not retry (transports.close_codes): refused
            # clients do not come back in a loop; the reason reaches the subscriptions' errors.
            # It stays under the 123 bytes a close frame allows.
            limit = session.connection_limit
            session.close(close_codes.TOO_MANY_CONNECTIONS, f"{TOO_MANY_CONNECTIONS}: at most {limit} per user")
            return
        session.put(ACK)
        session.acknowledge(PING)

    async def on_subscribe(self, message: dict[str, Any]) -> None:
        session = self.session
        operation_id, payload = message.get("id"), message.get("payload")
        if not session.valid_id(operation_id) or not valid_payload(payload):
            session.close(close_codes.INVALID_MESSAGE, "Invalid subscribe message")
        elif not session.acknowledged:
            session.close(close_codes.UNAUTHORIZED, "Unauthorized")
        elif operation_id in session.operations:
            session.close(close_codes.DUPLICATE_OPERATION, f"Subscriber for {operation_id} already exists")
        elif len(session.operations) >= session.server.max_subscriptions:
            session.put(*Frames(operation_id).refusal([too_many(session.server.max_subscriptions)]))
        else:
            await session.start(operation_id, payload, Frames(operation_id))
