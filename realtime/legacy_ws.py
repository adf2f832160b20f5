"""graphql-ws, the legacy protocol of subscriptions-transport-ws and Apollo's WebSocketLink.

The whole state machine of one connection:

    connection_init       -> connection_ack and a first `ka` (connection_error, then 4403,
                             without a valid token; 4408 when it does not come in time)
    start                 -> data* then complete (4400 malformed, 4401 before the ack; an id
                             still running is replaced, as the protocol says)
    stop                  -> the operation stops
    connection_terminate  -> the connection closes
    anything else         -> 4400

Refusals and errors go out as subscriptions-transport-ws's own server sends them: a `data` with
only `errors`, then `complete` (Apollo's WebSocketLink surfaces nothing else as GraphQL errors).
Queries and mutations end with `complete` too, or the client would keep them forever. `ka` goes
out on the keepalive interval: the client reconnects when none arrives for 30 s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from graphql import OperationType
from starlette.websockets import WebSocket

from auth import Viewer
from execution.operations import Request, is_unavailable, valid_payload
from realtime import close_codes
from realtime.operations import (
    INTERNAL_ERROR,
    LiveServer,
    Operation,
    TryAgainLater,
    decode,
    execute_single,
    start_subscription,
    token_in,
    too_many,
)
from realtime.outbox import OperationSink, WebSocketOutbox
from uvicorn_protocols import LeanWebSocketProtocol

logger = logging.getLogger("chat.websocket")

SUBPROTOCOL = "graphql-ws"
ACK = b'{"type":"connection_ack"}'
KA = b'{"type":"ka"}'
UNAUTHENTICATED = {"message": "A valid token is required.", "extensions": {"code": "UNAUTHENTICATED"}}


class LegacyWSConnection:
    def __init__(self, server: LiveServer, websocket: WebSocket, direct: LeanWebSocketProtocol | None) -> None:
        self.server = server
        self.websocket = websocket
        self.outbox = WebSocketOutbox(websocket, direct, server.send_queue)
        self.acknowledged = False
        self.viewer: Viewer | None = None
        self.operations: dict[str, Operation] = {}
        self._init_timer: asyncio.TimerHandle | None = None

    async def serve(self) -> None:
        await self.websocket.accept(SUBPROTOCOL)
        loop = asyncio.get_running_loop()
        self._init_timer = loop.call_later(self.server.init_timeout, self._init_timed_out)
        try:
            # Until the client is gone: after we close, uvicorn reports the disconnect once our
            # close frame is out.
            while (message := await self.websocket.receive())["type"] != "websocket.disconnect":
                if self.outbox.closed:
                    continue
                data = decode(message)
                if data is None:
                    self.close(close_codes.INVALID_MESSAGE, "Invalid message received")
                else:
                    await self.dispatch(data)
        finally:
            self._release()
            await self.outbox.aclose()

    async def dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "connection_init":
            await self.on_connection_init(message.get("payload"))
        elif kind == "start":
            self.on_start(message)
        elif kind == "stop":
            self.on_stop(message.get("id"))
        elif kind == "connection_terminate":
            self.close(close_codes.NORMAL, "Terminated")
        else:
            self.close(close_codes.INVALID_MESSAGE, f"Unexpected message of type {kind}")

    async def on_connection_init(self, payload: Any) -> None:
        self._cancel_init_timer()
        try:
            viewer = await self.server.authenticate(token_in(payload))
        except Exception:  # e.g. Postgres unreachable: the client should retry, not give up
            logger.exception("connection_init failed")
            self.close(close_codes.TRY_AGAIN_LATER, "Try again later")
            return
        if viewer is None:
            self.outbox.put(orjson.dumps({"type": "connection_error", "payload": UNAUTHENTICATED}))
            self.close(close_codes.FORBIDDEN, "Forbidden")
            return
        self.viewer = viewer
        if not self.acknowledged:
            self.acknowledged = True
            self.server.keepalive.add(self.outbox, self.outbox.put, KA)
        self.outbox.put(ACK)
        self.outbox.put(KA)

    def on_start(self, message: dict[str, Any]) -> None:
        operation_id, payload = message.get("id"), message.get("payload")
        if not isinstance(operation_id, str) or not operation_id or not valid_payload(payload):
            self.close(close_codes.INVALID_MESSAGE, "Invalid start message")
            return
        if not self.acknowledged:
            self.close(close_codes.UNAUTHORIZED, "Unauthorized")
            return
        previous = self.operations.pop(operation_id, None)
        if previous is not None:  # the protocol says a repeated id replaces the operation
            previous.stop()
        elif len(self.operations) >= self.server.max_subscriptions:
            self._refuse(operation_id, [too_many(self.server.max_subscriptions)])
            return
        operation = self.operations[operation_id] = Operation()
        operation.task = asyncio.create_task(self._run(operation_id, operation, payload))

    def on_stop(self, operation_id: Any) -> None:
        operation = self.operations.pop(operation_id, None) if isinstance(operation_id, str) else None
        if operation is not None:
            operation.stop()

    async def _run(self, operation_id: str, operation: Operation, payload: dict[str, Any]) -> None:
        try:
            request = self.server.operations.prepare(payload)
            if isinstance(request, list):
                self._refuse(operation_id, request)
            elif request.kind == OperationType.SUBSCRIPTION:
                await self._subscribe(operation_id, operation, request)
                return
            else:
                viewer = await self.server.revalidate(self.viewer) if self.viewer is not None else None
                result = await execute_single(self.server, request, viewer, self.websocket)
                if self.operations.get(operation_id) is operation:
                    self.outbox.put(_data(operation_id, result))
                    self.outbox.put(_complete(operation_id))
        except TryAgainLater:
            self.close(close_codes.TRY_AGAIN_LATER, "Try again later")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if is_unavailable(error):
                self.close(close_codes.TRY_AGAIN_LATER, "Try again later")
            else:
                logger.exception("Operation %s failed", operation_id)
                self._refuse(operation_id, [INTERNAL_ERROR])
        if self.operations.get(operation_id) is operation:
            del self.operations[operation_id]

    async def _subscribe(self, operation_id: str, operation: Operation, request: Request) -> None:
        def ended() -> None:
            if self.operations.get(operation_id) is operation:
                del self.operations[operation_id]

        sink = OperationSink(self.outbox, operation_id, "data", ended)
        outcome = await start_subscription(self.server, request, self.viewer, self.websocket, sink)
        if outcome is None:  # ended while starting, and told so
            return
        if isinstance(outcome, list):
            self._refuse(operation_id, outcome)
            ended()
            return
        operation.task = None
        if self.operations.get(operation_id) is not operation:  # stopped or replaced meanwhile
            outcome.close()
            return
        operation.subscription = outcome

    def _refuse(self, operation_id: str, errors: list[dict]) -> None:
        self.outbox.put(_data(operation_id, orjson.dumps({"errors": errors})))
        self.outbox.put(_complete(operation_id))

    def close(self, code: int, reason: str) -> None:
        self.outbox.close(code, reason)

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if not self.acknowledged:
            self.close(close_codes.INIT_TIMEOUT, "Connection initialisation timeout")

    def _cancel_init_timer(self) -> None:
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None

    def _release(self) -> None:
        self._cancel_init_timer()
        self.server.keepalive.discard(self.outbox)
        operations, self.operations = self.operations, {}
        for operation in operations.values():
            operation.stop()


def _data(operation_id: str, payload: bytes) -> bytes:
    return b'{"type":"data","id":' + orjson.dumps(operation_id) + b',"payload":' + payload + b"}"


def _complete(operation_id: str) -> bytes:
    return b'{"type":"complete","id":' + orjson.dumps(operation_id) + b"}"
