"""graphql-transport-ws: the protocol of the graphql-ws library and Apollo's GraphQLWsLink.

The state machine of one connection, modelled on graphql-ws's own `server.ts`:

    connection_init  -> connection_ack (4403 without a valid token, 4429 when repeated,
                        4408 when it does not come in time, 1008 "TOO_MANY_CONNECTIONS: ..."
                        when its user holds MAX_CONNECTIONS_PER_USER connections already)
    ping / pong      -> pong / nothing
    subscribe        -> next* then complete, or error (4400 malformed, 4401 before the ack,
                        4409 for an id still running)
    complete         -> the operation stops
    anything else    -> 4400

The server pings on the keepalive interval. A subscription that cannot start because the
database is away closes the connection with 1013, on which the client reconnects and resumes.
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
PING = b'{"type":"ping"}'
PONG = b'{"type":"pong"}'


class TransportWSConnection(Connection):
    SUBPROTOCOL = "graphql-transport-ws"
    RESULT = "next"
    __slots__ = ("init_received",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_received = False

    async def handle(self, received: Mapping[str, Any]) -> None:
        message = decode(received)
        if message is None:
            self.close(close_codes.INVALID_MESSAGE, "Invalid message received")
            return
        kind = message["type"]
        if kind == "connection_init":
            await self.on_connection_init(message.get("payload"))
        elif kind == "ping":
            self.outbox.put(PONG)
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self.on_subscribe(message)
        elif kind == "complete":
            self.on_complete(message.get("id"))
        else:
            self.close(close_codes.INVALID_MESSAGE, f"Unexpected message of type {kind}")

    async def on_connection_init(self, payload: Any) -> None:
        if self.init_received:
            self.close(close_codes.TOO_MANY_INITIALISATION_REQUESTS, "Too many initialisation requests")
            return
        self.init_received = True
        viewer = await self.authenticate(payload)
        if viewer is None:
            self.close(close_codes.FORBIDDEN, "Forbidden")
            return
        if not await self.hold_connection_slot(viewer):
            # A close code graphql-ws's client does not retry (transports.close_codes): refused
            # clients do not come back in a loop; the reason reaches the subscriptions' errors.
            _, reason = self.too_many_connections()
            self.close(close_codes.TOO_MANY_CONNECTIONS, reason)
            return
        self.acknowledge(ACK, PING)

    async def on_subscribe(self, message: dict[str, Any]) -> None:
        operation_id, payload = message.get("id"), message.get("payload")
        if not self.valid_id(operation_id) or not valid_payload(payload):
            self.close(close_codes.INVALID_MESSAGE, "Invalid subscribe message")
        elif not self.acknowledged:
            self.close(close_codes.UNAUTHORIZED, "Unauthorized")
        elif operation_id in self.operations:
            self.close(close_codes.DUPLICATE_OPERATION, f"Subscriber for {operation_id} already exists")
        elif len(self.operations) >= self.server.max_subscriptions:
            self.refuse(operation_id, [too_many(self.server.max_subscriptions)])
        else:
            await self.start(operation_id, payload)

    def on_complete(self, operation_id: Any) -> None:
        operation = self.operations.pop(operation_id, None) if isinstance(operation_id, str) else None
        if operation is not None:
            operation.stop()

    def refuse(self, operation_id: str, errors: list[dict]) -> None:
        self.outbox.put(orjson.dumps({"type": "error", "id": operation_id, "payload": errors}))
