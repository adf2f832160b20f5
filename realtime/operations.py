"""Starting a subscription on the fan-out path, for either WebSocket protocol.

This does what Ariadne's `subscribe()` does up to the source stream (parse and validate with
the handler's own hooks, run the source resolver, which authorizes), then hands the stream to
the room's feed instead of iterating it per subscriber.
"""

from __future__ import annotations

from typing import Any

from ariadne.asgi.handlers import GraphQLWebsocketHandlerBase
from ariadne.graphql import validate_query
from ariadne.logger import log_error
from ariadne.utils import get_operation_type
from graphql import DocumentNode, ExecutionResult, GraphQLError, OperationType
from graphql.execution import create_source_event_stream
from starlette.websockets import WebSocket

from realtime.fanout import Outbox, Protocol, Selection, Subscription, hub
from resolvers.subscription import RoomStream
from settings import settings

OUTBOX_SCOPE_KEY = "chat.outbox"


def outbox_of(websocket: WebSocket) -> Outbox:
    outbox = websocket.scope.get(OUTBOX_SCOPE_KEY)
    if outbox is None:
        outbox = websocket.scope[OUTBOX_SCOPE_KEY] = Outbox(websocket, settings.ws_send_queue)
    return outbox


async def close_outbox(websocket: WebSocket) -> None:
    outbox = websocket.scope.pop(OUTBOX_SCOPE_KEY, None)
    if outbox is not None:
        await outbox.aclose()


def is_subscription(document: DocumentNode, data: dict[str, Any]) -> bool:
    return get_operation_type(document, data.get("operationName")) == OperationType.SUBSCRIPTION


async def start_subscription(
    handler: GraphQLWebsocketHandlerBase,
    websocket: WebSocket,
    data: dict[str, Any],
    document: DocumentNode,
    operation_id: str,
    protocol: Protocol,
    context: Any = None,
) -> Subscription | list[dict]:
    """The running subscription, or the formatted errors that refused it."""
    assert handler.schema is not None
    if context is None:
        context = await handler.get_context_for_request(websocket, data)
    rules = handler.validation_rules
    if callable(rules):
        rules = rules(context, document, data)
    errors = validate_query(
        handler.schema,
        document,
        rules,
        enable_introspection=handler.introspection,
        query_validator=handler.query_validator,
    )
    if not errors:
        stream = await create_source_event_stream(
            handler.schema,
            document,
            handler.root_value,
            context,
            data.get("variables"),
            data.get("operationName"),
        )
        if isinstance(stream, RoomStream):
            subscription = Subscription(
                outbox=outbox_of(websocket),
                operation_id=operation_id,
                protocol=protocol,
                viewer=stream.viewer,
                selection=Selection.of(document, data),
                room=stream.room,
                last_seq=stream.after_seq,
            )
            await hub.join(subscription)
            return subscription
        if isinstance(stream, ExecutionResult):
            errors = list(stream.errors or ())
        else:
            errors = [GraphQLError("This subscription is not served here.")]
    for error in errors:
        log_error(error, handler.logger)
    return [handler.error_formatter(error, handler.debug) for error in errors]
