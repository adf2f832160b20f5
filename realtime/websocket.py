"""One WebSocket endpoint, both GraphQL-over-WebSocket protocols.

The client's offered subprotocol picks Ariadne's handler: `graphql-transport-ws` (graphql-ws,
Apollo's GraphQLWsLink) is preferred, `graphql-ws` (subscriptions-transport-ws, Apollo's
WebSocketLink) is the fallback, and anything else is refused before the handshake completes.
The subclasses only add what Ariadne leaves out: 4403 on a refused token, server pings,
4400 on malformed frames, and the legacy protocol's "a repeated id replaces the operation".
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress
from datetime import timedelta
from inspect import isawaitable
from typing import Any

from ariadne.asgi.handlers import GraphQLTransportWSHandler, GraphQLWebsocketHandlerBase, GraphQLWSHandler
from ariadne.asgi.handlers.graphql_transport_ws import ClientContext
from ariadne.exceptions import WebSocketConnectionError
from ariadne.types import Operation
from ariadne.utils import get_operation_type
from graphql import DocumentNode, GraphQLError
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from auth import token_from_header, viewer_for_token
from execution.documents import parse_document
from realtime import fanout
from realtime.fanout import CLOSE_TRY_AGAIN_LATER
from realtime.keepalive import Keepalive
from realtime.operations import TryAgainLater, close_outbox, is_subscription, outbox_of, start_subscription
from resolvers.context import VIEWER_SCOPE_KEY

logger = logging.getLogger("chat.websocket")

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"

PING_FRAME = '{"type":"ping"}'
KA_FRAME = '{"type":"ka"}'
CLOSE_INVALID_MESSAGE = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_INIT_TIMEOUT = 4408
INIT_DEADLINE_SCOPE_KEY = "chat.init_deadline"


class InvalidMessage(Exception):
    pass


class StrictWebSocket(WebSocket):
    """Frames that are not JSON objects close the socket with 4400 instead of crashing it."""

    async def receive_json(self, mode: str = "text") -> Any:
        message = await self.receive()
        self._raise_on_disconnect(message)
        text = message.get("text")
        if text is None and message.get("bytes") is not None:
            text = message["bytes"].decode("utf-8", errors="replace")
        try:
            data = json.loads(text or "")
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            await close_quietly(self, CLOSE_INVALID_MESSAGE, "Invalid message")
            raise WebSocketDisconnect(CLOSE_INVALID_MESSAGE)
        return data


def is_open(websocket: WebSocket) -> bool:
    return WebSocketState.DISCONNECTED not in (websocket.client_state, websocket.application_state)


async def close_quietly(websocket: WebSocket, code: int, reason: str = "") -> None:
    if is_open(websocket):
        with suppress(RuntimeError, OSError):
            await websocket.close(code=code, reason=reason)


def _token_from_payload(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers")
    sources = [payload, headers] if isinstance(headers, dict) else [payload]
    for source in sources:
        for key in ("authorization", "Authorization", "authToken", "token"):
            value = source.get(key)
            if isinstance(value, str) and value.strip():
                return token_from_header(value)
    return None


async def authenticate(websocket: WebSocket, payload: Any) -> None:
    """on_connect for both protocols: the viewer lives on the scope for the connection's life."""
    viewer = await viewer_for_token(_token_from_payload(payload))
    if viewer is None:
        raise WebSocketConnectionError(
            {"message": "A valid token is required.", "extensions": {"code": "UNAUTHENTICATED"}}
        )
    websocket.scope[VIEWER_SCOPE_KEY] = viewer


def _valid_operation(message: dict) -> bool:
    payload = message.get("payload")
    return (
        isinstance(message.get("id"), str)
        and bool(message["id"])
        and isinstance(payload, dict)
        and isinstance(payload.get("query"), str)
        and isinstance(payload.get("variables") or {}, dict)
        and isinstance(payload.get("operationName") or "", str)
    )


def _subscription_document(data: dict) -> DocumentNode | None:
    """The parsed document when `data` is a subscription; None sends it down Ariadne's own path."""
    try:
        document = parse_document(data["query"])
    except GraphQLError:
        return None
    try:
        return document if is_subscription(document, data) else None
    except GraphQLError:
        return None


def _single_result(data: dict) -> bool:
    """A query or mutation (one result, then the operation is done)."""
    try:
        return not is_subscription(parse_document(data["query"]), data)
    except (GraphQLError, RuntimeError):  # malformed, or no such operation: answered already
        return False


def _no_such_operation(data: dict) -> dict | None:
    """The error for a document that parses but has no operation to run (no operation at all,
    or none named `operationName`), in graphql-core's words. Ariadne's dispatch raises a bare
    RuntimeError on such a document, which dropped the whole connection with no close code."""
    try:
        document = parse_document(data["query"])
    except GraphQLError:
        return None  # Ariadne answers a syntax error itself
    try:
        get_operation_type(document, data.get("operationName"))
    except RuntimeError:
        name = data.get("operationName")
        message = f"Unknown operation named '{name}'." if name else "Must provide an operation."
        return {"message": message, "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}
    return None


def _too_many(limit: int) -> dict:
    return {
        "message": f"At most {limit} subscriptions per connection.",
        "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS"},
    }


class TransportWSHandler(GraphQLTransportWSHandler):
    def __init__(self, *, keepalive: Keepalive, max_subscriptions: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keepalive = keepalive
        self.max_subscriptions = max_subscriptions

    async def handle_websocket(self, websocket: WebSocket) -> None:
        """Ariadne's loop, holding nothing between messages: its frame kept the last message (a
        subscribe payload) and the init-timeout coroutine for the connection's whole life."""
        await websocket.accept(TRANSPORT_WS)
        client_context = ClientContext()
        client_context.connection_init_timeout_task = asyncio.create_task(
            self.handle_connection_init_timeout(websocket, client_context)
        )
        try:
            while WebSocketState.DISCONNECTED not in (websocket.client_state, websocket.application_state):
                await self.handle_websocket_message(websocket, await websocket.receive_json(), client_context)
        except WebSocketDisconnect:
            pass
        finally:
            for operation_id in list(client_context.operations):
                await self.stop_websocket_operation(websocket, operation_id, client_context)
            if self.on_disconnect:
                result = self.on_disconnect(websocket)
                if isawaitable(result):
                    await result

    async def handle_websocket_subscribe(
        self, websocket: WebSocket, data: Any, operation_id: str, client_context: Any
    ) -> None:
        document = None
        if client_context.connection_acknowledged and operation_id not in client_context.operations:
            error = _no_such_operation(data)
            if error is not None:
                await websocket.send_json({"type": self.GQL_ERROR, "id": operation_id, "payload": [error]})
                return
            document = _subscription_document(data)
        if document is None:  # not ours to serve: queries, mutations, errors, protocol violations
            await super().handle_websocket_subscribe(websocket, data, operation_id, client_context)
            return
        if len(client_context.operations) >= self.max_subscriptions:
            error = _too_many(self.max_subscriptions)
            await websocket.send_json({"type": self.GQL_ERROR, "id": operation_id, "payload": [error]})
            return
        try:
            outcome = await start_subscription(self, websocket, data, document, operation_id, fanout.TRANSPORT_WS)
        except TryAgainLater:
            await close_quietly(websocket, CLOSE_TRY_AGAIN_LATER, "Try again later")
            return
        if outcome is None:  # ended while starting, and told so
            return
        if isinstance(outcome, list):
            await websocket.send_json({"type": self.GQL_ERROR, "id": operation_id, "payload": outcome})
            return
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)  # Ariadne cancels and awaits a task per operation; there is none
        client_context.operations[operation_id] = Operation(
            id=operation_id, name=data.get("operationName"), generator=outcome
        )
        client_context.operation_tasks[operation_id] = done

        def ended() -> None:
            client_context.operations.pop(operation_id, None)
            client_context.operation_tasks.pop(operation_id, None)

        outcome.on_end = ended

    async def handle_websocket_message(self, websocket: WebSocket, message: dict, client_context: Any) -> None:
        if message["type"] in (self.GQL_SUBSCRIBE,) and not _valid_operation(message):
            await close_quietly(websocket, CLOSE_INVALID_MESSAGE, "Invalid subscribe message")
            return
        await super().handle_websocket_message(websocket, message, client_context)

    async def handle_websocket_connection_init_message(
        self, websocket: WebSocket, message: dict, client_context: Any
    ) -> None:
        if client_context.connection_init_received:
            await close_quietly(websocket, 4429, "Too many initialisation requests")
            return
        client_context.connection_init_received = True
        if client_context.connection_init_timeout_task is not None:
            # It would sleep on, and the finished task would stay on the context: both hold memory.
            client_context.connection_init_timeout_task.cancel()
            client_context.connection_init_timeout_task = None
        try:
            await authenticate(websocket, message.get("payload"))
        except WebSocketConnectionError:
            await close_quietly(websocket, CLOSE_FORBIDDEN, "Forbidden")
            return
        except Exception:  # e.g. Postgres unreachable: the client should retry, not give up
            logger.exception("connection_init failed")
            await close_quietly(websocket, CLOSE_TRY_AGAIN_LATER, "Try again later")
            return
        await websocket.send_json({"type": self.GQL_CONNECTION_ACK})
        client_context.connection_acknowledged = True
        self.keepalive.add(websocket, outbox_of(websocket).put, PING_FRAME)


class LegacyWSHandler(GraphQLWSHandler):
    def __init__(self, *, keepalive: Keepalive, max_subscriptions: int, init_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keepalive = keepalive
        self.max_subscriptions = max_subscriptions
        self.init_timeout = init_timeout

    async def handle_websocket(self, websocket: WebSocket) -> None:
        """Ariadne's legacy handler waits for `connection_init` forever: here, as on
        graphql-transport-ws, a connection that has not sent it in time is closed with 4408."""
        deadline = asyncio.create_task(self._close_without_init(websocket))
        websocket.scope[INIT_DEADLINE_SCOPE_KEY] = deadline
        try:
            await super().handle_websocket(websocket)
        finally:
            deadline.cancel()

    async def _close_without_init(self, websocket: WebSocket) -> None:
        await asyncio.sleep(self.init_timeout)
        await close_quietly(websocket, CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    async def keep_websocket_alive(self, websocket: WebSocket) -> None:
        """Ariadne starts this after `connection_ack`: one `ka` now, then the shared timer's."""
        outbox = outbox_of(websocket)
        outbox.put(KA_FRAME)
        self.keepalive.add(websocket, outbox.put, KA_FRAME)

    async def handle_websocket_message(self, websocket: WebSocket, message: dict, operations: dict) -> None:
        kind = message["type"]
        if kind == self.GQL_START:
            if not _valid_operation(message):
                await close_quietly(websocket, CLOSE_INVALID_MESSAGE, "Invalid start message")
                return
            previous = operations.pop(message["id"], None)
            if previous is not None:  # the protocol says a repeated id replaces the operation
                await self.stop_websocket_operation(websocket, previous)
            elif len(operations) >= self.max_subscriptions:
                await self._refuse(websocket, message["id"], [_too_many(self.max_subscriptions)])
                return
        elif kind == self.GQL_CONNECTION_INIT:
            deadline = websocket.scope.pop(INIT_DEADLINE_SCOPE_KEY, None)
            if deadline is not None:
                deadline.cancel()
        elif kind not in (self.GQL_CONNECTION_TERMINATE, self.GQL_STOP):
            await close_quietly(websocket, CLOSE_INVALID_MESSAGE, "Invalid message type")
            return
        await super().handle_websocket_message(websocket, message, operations)

    async def process_single_message(
        self, websocket: WebSocket, data: Any, operation_id: str, operations: dict
    ) -> None:
        """Ariadne answers a query or mutation with `data` alone. subscriptions-transport-ws's
        server follows it with `complete`; without that its client keeps the operation forever
        and Apollo's WebSocketLink never resolves `client.query()`."""
        error = _no_such_operation(data)
        if error is not None:
            await self._refuse(websocket, operation_id, [error])
            return
        await super().process_single_message(websocket, data, operation_id, operations)
        if _single_result(data) and is_open(websocket):
            await websocket.send_json({"type": self.GQL_COMPLETE, "id": operation_id})

    async def _refuse(self, websocket: WebSocket, operation_id: str, errors: list[dict]) -> None:
        """As subscriptions-transport-ws's own server does: the errors as a result, then complete.
        (Its `error` message is for unexpected failures; Apollo's WebSocketLink only surfaces
        errors sent this way as GraphQL errors with their extensions.)"""
        await websocket.send_json({"type": self.GQL_DATA, "id": operation_id, "payload": {"errors": errors}})
        await websocket.send_json({"type": self.GQL_COMPLETE, "id": operation_id})

    async def start_websocket_operation(
        self,
        websocket: WebSocket,
        data: Any,
        context_value: Any,
        query_document: DocumentNode,
        operation_id: str,
        operations: dict,
    ) -> None:
        try:
            outcome = await start_subscription(
                self, websocket, data, query_document, operation_id, fanout.LEGACY_WS, context_value
            )
        except TryAgainLater:
            await close_quietly(websocket, CLOSE_TRY_AGAIN_LATER, "Try again later")
            return
        if outcome is None:  # ended while starting, and told so
            return
        if isinstance(outcome, list):
            await self._refuse(websocket, operation_id, outcome)
            return
        operations[operation_id] = Operation(id=operation_id, name=data.get("operationName"), generator=outcome)
        outcome.on_end = lambda: operations.pop(operation_id, None)


class DualProtocolHandler(GraphQLWebsocketHandlerBase):
    def __init__(self, *, keepalive: float, init_timeout: float, max_subscriptions: int) -> None:
        super().__init__(on_connect=authenticate)
        self.keepalive = Keepalive(keepalive)
        self.transport = TransportWSHandler(
            on_connect=authenticate,
            keepalive=self.keepalive,
            max_subscriptions=max_subscriptions,
            connection_init_wait_timeout=timedelta(seconds=init_timeout),
        )
        self.legacy = LegacyWSHandler(
            on_connect=authenticate,
            keepalive=self.keepalive,
            max_subscriptions=max_subscriptions,
            init_timeout=init_timeout,
        )

    def configure(self, *args: Any, **kwargs: Any) -> None:
        super().configure(*args, **kwargs)
        self.transport.configure(*args, **kwargs)
        self.legacy.configure(*args, **kwargs)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle_websocket(StrictWebSocket(scope=scope, receive=receive, send=send))

    async def handle_websocket(self, websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        if TRANSPORT_WS in offered:
            handler: GraphQLWebsocketHandlerBase = self.transport
        elif LEGACY_WS in offered:
            handler = self.legacy
        else:
            await websocket.close(code=1002)  # before accept: the handshake is refused (HTTP 403)
            return
        # Nothing here reads the handshake's headers (the token comes in connection_init): an idle
        # connection need not keep them for its whole life.
        websocket.scope["headers"] = []
        try:
            await handler.handle_websocket(websocket)
        finally:
            self.keepalive.discard(websocket)
            await close_outbox(websocket)
