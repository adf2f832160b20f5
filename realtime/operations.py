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

from auth import viewer_for_digest
from db import rooms
from errors import Forbidden, Unauthenticated
from execution.json import dumps
from realtime.fanout import Outbox, Protocol, Selection, Subscription, hub
from resolvers.context import NOT_A_MEMBER, SIGN_IN_FIRST
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
) -> Subscription | list[dict] | None:
    """The running subscription, the formatted errors that refused it, or None when it was
    ended while starting (its error and `complete` are on their way to the client)."""
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
            # The source checked the token and the membership before the subscription was in its
            # room's feed: a logOut or leaveRoom committed in between published its event to a
            # feed that did not hold it yet, and it would have lived on. Checked again now that it
            # is in the feed: any later revocation's event reaches it there.
            try:
                refusal = await _no_longer_allowed(stream)
            except BaseException:
                if subscription.feed is not None:
                    subscription.feed.remove(subscription)
                raise
            if subscription.feed is None:
                return None  # such an event ended it meanwhile
            if refusal is None:
                return subscription
            # Ended as that event would have ended it: through the outbox, after any history
            # already queued there.
            log_error(refusal, handler.logger)
            subscription.feed.remove(subscription)
            subscription.end(dumps({"errors": [handler.error_formatter(refusal, handler.debug)]}))
            return None
        if isinstance(stream, ExecutionResult):
            errors = list(stream.errors or ())
        else:
            errors = [GraphQLError("This subscription is not served here.")]
    for error in errors:
        log_error(error, handler.logger)
    return [handler.error_formatter(error, handler.debug) for error in errors]


async def _no_longer_allowed(stream: RoomStream) -> GraphQLError | None:
    """Why the viewer may no longer receive the room's messages, if they may not."""
    if await viewer_for_digest(stream.viewer.token_hash) is None:
        return Unauthenticated(SIGN_IN_FIRST)
    if not await rooms.is_member(int(stream.room["id"]), stream.viewer.id):
        return Forbidden(NOT_A_MEMBER)
    return None
