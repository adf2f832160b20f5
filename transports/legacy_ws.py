"""graphql-ws, the legacy protocol of subscriptions-transport-ws and Apollo's WebSocketLink.

The state machine of one connection:

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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from execution.operations import valid_payload
from transports import close_codes
from transports.connection import Connection
from transports.operations import decode, too_many

ACK = b'{"type":"connection_ack"}'
KA = b'{"type":"ka"}'
UNAUTHENTICATED = {"message": "A valid token is required.", "extensions": {"code": "UNAUTHENTICATED"}}


class LegacyWSConnection(Connection):
    SUBPROTOCOL = "graphql-ws"
    RESULT = "data"
    __slots__ = ()

    async def handle(self, received: Mapping[str, Any]) -> None:
        message = decode(received)
        if message is None:
            self.close(close_codes.INVALID_MESSAGE, "Invalid message received")
            return
        kind = message["type"]
        if kind == "connection_init":
            await self.on_connection_init(message.get("payload"))
        elif kind == "start":
            await self.on_start(message)
        elif kind == "stop":
            self.on_stop(message.get("id"))
        elif kind == "connection_terminate":
            self.close(close_codes.NORMAL, "Terminated")
        else:
            self.close(close_codes.INVALID_MESSAGE, f"Unexpected message of type {kind}")

    async def on_connection_init(self, payload: Any) -> None:
        viewer = await self.authenticate(payload)
        if viewer is None:
            if not self.outbox.closed:
                self.outbox.put(orjson.dumps({"type": "connection_error", "payload": UNAUTHENTICATED}))
                self.close(close_codes.FORBIDDEN, "Forbidden")
            return
        if not await self.hold_connection_slot(viewer):
            error, reason = self.too_many_connections()
            self.outbox.put(orjson.dumps({"type": "connection_error", "payload": error}))
            self.close(close_codes.TOO_MANY_CONNECTIONS, reason)
            return
        if self.acknowledged:  # again: the protocol lets a client send it twice
            self.outbox.put(ACK)
        else:
            self.acknowledge(ACK, KA)
        self.outbox.put(KA)

    async def on_start(self, message: dict[str, Any]) -> None:
        operation_id, payload = message.get("id"), message.get("payload")
        if not self.valid_id(operation_id) or not valid_payload(payload):
            self.close(close_codes.INVALID_MESSAGE, "Invalid start message")
            return
        if not self.acknowledged:
            self.close(close_codes.UNAUTHORIZED, "Unauthorized")
            return
        previous = self.operations.pop(operation_id, None)
        if previous is not None:  # the protocol says a repeated id replaces the operation
            previous.stop()
        elif len(self.operations) >= self.server.max_subscriptions:
            self.refuse(operation_id, [too_many(self.server.max_subscriptions)])
            return
        await self.start(operation_id, payload)

    def on_stop(self, operation_id: Any) -> None:
        operation = self.operations.pop(operation_id, None) if isinstance(operation_id, str) else None
        if operation is not None:
            operation.stop()

    def refuse(self, operation_id: str, errors: list[dict]) -> None:
        self.outbox.put(self.result(operation_id, orjson.dumps({"errors": errors})))
        self.outbox.put(self.complete(operation_id))
