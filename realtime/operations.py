"""Starting a subscription on the fan-out path, for either WebSocket protocol.

This does what Ariadne's `subscribe()` does up to the source stream (parse and validate with
the handler's own hooks, run the source resolver, which authorizes), then hands the stream to
the room's feed instead of iterating it per subscriber.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ariadne.asgi.handlers import GraphQLWebsocketHandlerBase
from ariadne.graphql import validate_query
from ariadne.logger import log_error
from ariadne.utils import get_operation_type
from graphql import DocumentNode, ExecutionResult, GraphQLError, OperationType
from graphql.execution import create_source_event_stream
from starlette.websockets import WebSocket

from db.access import room_access
from errors import Forbidden, ServiceUnavailable, Unauthenticated
from execution.json import dumps
from realtime.fanout import CLOSE_TRY_AGAIN_LATER, Outbox, Protocol, RoomFeed, Selection, Subscription, hub
from resolvers.context import NOT_A_MEMBER, SIGN_IN_FIRST
from resolvers.subscription import RoomStream
from settings import settings

OUTBOX_SCOPE_KEY = "chat.outbox"
logger = logging.getLogger("chat.subscriptions")


class TryAgainLater(Exception):
    """The subscription cannot start now (the database or its pool is unavailable): the handler
    closes the connection with 1013, on which both Apollo links reconnect and resubscribe."""


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
            try:
                feed = await hub.admit(subscription)
            except Exception as error:
                if _unavailable(error):
                    raise TryAgainLater from error
                raise
            # The source checked the token and the membership before the subscription was in its
            # room's feed: a logOut or leaveRoom committed in between published its event to a
            # feed that did not hold it yet, and it would have lived on. Checked again now that it
            # is in the feed: any later revocation's event reaches it there.
            try:
                refusal = await _no_longer_allowed(stream)
            except BaseException as error:
                feed.remove(subscription)
                if isinstance(error, Exception) and _unavailable(error):
                    raise TryAgainLater from error
                raise
            if subscription.feed is None:
                return None  # such an event ended it meanwhile
            if refusal is not None:
                log_error(refusal, handler.logger)
                feed.remove(subscription)
                subscription.end(dumps({"errors": [handler.error_formatter(refusal, handler.debug)]}))
                return None
            subscription.catching_up = asyncio.create_task(_catch_up(feed, subscription))
            return subscription
        if isinstance(stream, ExecutionResult):
            errors = list(stream.errors or ())
            if any(_unavailable(error) for error in errors):
                raise TryAgainLater
        else:
            errors = [GraphQLError("This subscription is not served here.")]
    for error in errors:
        log_error(error, handler.logger)
    return [handler.error_formatter(error, handler.debug) for error in errors]


async def _no_longer_allowed(stream: RoomStream) -> GraphQLError | None:
    """Why the viewer may no longer receive the room's messages, if they may not."""
    access = await room_access(stream.viewer.token_hash, int(stream.room["id"]))
    if not access.signed_in:
        return Unauthenticated(SIGN_IN_FIRST)
    if not access.member:
        return Forbidden(NOT_A_MEMBER)
    return None


async def _catch_up(feed: RoomFeed, subscription: Subscription) -> None:
    """A resume that cannot be served now (the database went away mid-way) ends the connection
    with 1013: the client reconnects and resumes from the last message it got."""
    try:
        await feed.catch_up(subscription)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        if not _unavailable(error):
            logger.exception("Catching up a subscriber failed")
        else:
            logger.warning("Catching up a subscriber failed (%s); closing with 1013", type(error).__name__)
        feed.remove(subscription)
        subscription.outbox.close(CLOSE_TRY_AGAIN_LATER, "Try again later")
    finally:
        subscription.catching_up = None


def _unavailable(error: BaseException) -> bool:
    """The database (or its pool) could not serve us now: the client should come back shortly."""
    current: BaseException | None = error
    while current is not None:  # graphql-core wraps a resolver's (coded) error in a located one
        if isinstance(current, ServiceUnavailable):
            return True
        current = current.original_error if isinstance(current, GraphQLError) else None
    return False
