"""graphql-ws, the legacy protocol of subscriptions-transport-ws and Apollo's WebSocketLink.

The state machine of one connection, read top to bottom below (accept, the init timeout, the
dispatch on message type, each message, the cleanup):

    connection_init       -> connection_ack and a first `ka` (connection_error, then 4403,
                             without a valid token; 4408 when it does not come in time;
                             connection_error with TOO_MANY_CONNECTIONS, then 1008, when its
                             user holds MAX_CONNECTIONS_PER_USER connections already)
    start                 -> data* then complete (4400 malformed, 4401 before the ack; an id
                             still running is replaced, as the protocol says)
    stop                  -> the operation stops
    connection_terminate  -> the connection closes
    anything else         -> 4400

Refusals and errors go out as subscriptions-transport-ws's own server sends them: a `data` with
only `errors`, then `complete` (Apollo's WebSocketLink surfaces nothing else as GraphQL errors).
Queries and mutations end with `complete` too, or the client would keep them forever. `ka` goes
out on the keepalive interval: the client reconnects when none arrives for 30 s.

subscriptions-transport-ws's client reconnects after any close it did not ask for, whatever the
code, with exponential backoff (100 ms doubling to 10 s, jittered) unless built with
`reconnect: false`; a `connection_error` only reaches its `connectionCallback`. A refusal
past MAX_CONNECTIONS_PER_USER cannot stop it, then, but each attempt costs us one token lookup
and one Redis round trip, and the backoff paces them.

Every frame and close of this protocol is built here; transports.websocket_session holds what
both WebSocket protocols share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.websockets import WebSocket

from execution.operations import valid_payload
from live.quota import TOO_MANY_CONNECTIONS, too_many_connections
from telemetry import record
from transports import close_codes
from transports.operations import LiveServer, TryAgainLater, decode, too_many
from transports.outbox import DirectWriter
from transports.websocket_session import Closes, InitDeadline, WebSocketSession

SUBPROTOCOL = "graphql-ws"

ACK = b'{"type":"connection_ack"}'
KA = b'{"type":"ka"}'
UNAUTHENTICATED = {"message": "A valid token is required.", "extensions": {"code": "UNAUTHENTICATED"}}
CLOSES = Closes(
    try_again_later=(close_codes.TRY_AGAIN_LATER, "Try again later"),
    slow_consumer=(close_codes.TRY_AGAIN_LATER, "Slow consumer"),
    token_expired=(close_codes.TOKEN_EXPIRED, "Token expired"),
    transport=record.GRAPHQL_WS,
)


def connection_error(payload: dict) -> bytes:
    return orjson.dumps({"type": "connection_error", "payload": payload})


class Frames:
    """One operation's frames: `data`, `complete`, and for a refusal a `data` with only
    `errors`, then `complete`."""

    __slots__ = ("_complete", "_data")

    def __init__(self, operation_id: str) -> None:
        quoted = orjson.dumps(operation_id)
        self._data = b'{"type":"data","id":' + quoted + b',"payload":'
        self._complete = b'{"type":"complete","id":' + quoted + b"}"

    def result(self, payload: bytes) -> bytes:
        return self._data + payload + b"}"

    def complete(self) -> bytes:
        return self._complete

    def refusal(self, errors: list[dict]) -> tuple[bytes, ...]:
        return self.result(orjson.dumps({"errors": errors})), self._complete


class LegacyWSConnection:
    SUBPROTOCOL = SUBPROTOCOL
    __slots__ = ("init_deadline", "session")

    def __init__(self, server: LiveServer, websocket: WebSocket, direct: DirectWriter | None) -> None:
        self.session = WebSocketSession(server, websocket, direct, CLOSES)
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
        elif kind == "start":
            await self.on_start(message)
        elif kind == "stop":
            self.session.stop(message.get("id"))
        elif kind == "connection_terminate":
            self.session.close(close_codes.NORMAL, "Terminated")
        else:
            self.session.close(close_codes.INVALID_MESSAGE, f"Unexpected message of type {kind}")

    async def on_connection_init(self, payload: Any) -> None:
        session = self.session
        self.init_deadline.stop()
        try:
            viewer = await session.authenticate(payload)
        except TryAgainLater:
            session.close(*CLOSES.try_again_later)
            return
        if viewer is None:
            if not session.outbox.closed:
                session.put(connection_error(UNAUTHENTICATED))
                session.close(close_codes.FORBIDDEN, "Forbidden")
            return
        if not await session.hold_connection_slot(viewer):
            # The reason stays under the 123 bytes a close frame allows.
            limit = session.connection_limit
            session.put(connection_error(too_many_connections(limit)))
            session.close(close_codes.TOO_MANY_CONNECTIONS, f"{TOO_MANY_CONNECTIONS}: at most {limit} per user")
            return
        session.put(ACK)
        if not session.acknowledged:  # (again, the protocol lets a client send it twice: one ack more)
            session.acknowledge(KA)
        session.put(KA)

    async def on_start(self, message: dict[str, Any]) -> None:
        session = self.session
        operation_id, payload = message.get("id"), message.get("payload")
        if not session.valid_id(operation_id) or not valid_payload(payload):
            session.close(close_codes.INVALID_MESSAGE, "Invalid start message")
            return
        if not session.acknowledged:
            session.close(close_codes.UNAUTHORIZED, "Unauthorized")
            return
        if operation_id in session.operations:  # the protocol says a repeated id replaces the operation
            session.stop(operation_id)
        elif len(session.operations) >= session.server.max_subscriptions:
            session.put(*Frames(operation_id).refusal([too_many(session.server.max_subscriptions)]))
            return
        await session.start(operation_id, payload, Frames(operation_id))
