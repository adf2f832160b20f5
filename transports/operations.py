"""What both WebSocket protocols share: the server's configuration, a running operation, and
starting a subscription on the live engine (graphql-core's public `Executor.build` and
`create_source_event_stream`: a source that returns a `LiveSource` is served by the engine).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, Protocol

import orjson
from graphql import ExecutionResult, Executor, GraphQLError
from graphql.execution import create_source_event_stream

from execution.operations import Operations, Request, is_unavailable
from identity.auth import Viewer, token_from_header
from live.engine import Engine, Selection, Sink, Subscription
from live.quota import CONNECTIONS, SUBSCRIPTIONS, LiveQuota, Slot, too_many_subscriptions
from live.source import LiveSource
from telemetry import record, traces
from transports.keepalive import Keepalive

logger = logging.getLogger("chat.websocket")

# (viewer, connection, last_event_id) -> the resolvers' context
ContextFactory = Callable[[Viewer | None, Any, str | None], dict[str, Any]]
Authenticate = Callable[[str | None], Awaitable[Viewer | None]]


@dataclass(slots=True)
class Operation:
    """A running operation: starting (or, for a query, executing) in `task`, then, for a
    subscription, live in `subscription`."""

    task: asyncio.Task[None] | None = None
    subscription: Subscription | None = None

    def stop(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class TryAgainLater(Exception):
    """The operation cannot start now (the database or its pool is unavailable): the protocol
    closes the connection with 1013, on which Apollo's clients reconnect and resubscribe."""


class Presence(Protocol):
    """Told of each authenticated connection, so its user shows online (live.presence)."""

    def connected(self, viewer: Viewer) -> str: ...

    def disconnected(self, key: str) -> None: ...


class SlotHolder(Protocol):
    """A WebSocket connection or a stream, holding one of its user's connection slots until it
    closes: a WebSocket from its acknowledgement (transports.websocket_session), so its subscriptions find
    it held; a stream from its subscription, taken here."""

    connection_slot: Slot | None

    @property
    def transport(self) -> str:
        """Its chat.transport (telemetry.record)."""
        ...


@dataclass
class LiveServer:
    """What the WebSocket protocols need to serve operations; built once by the app factory."""

    operations: Operations
    engine: Engine
    context: ContextFactory
    authenticate: Authenticate  # a bearer token -> its viewer, read from the database
    # The connection's viewer if its token is still valid: a query or mutation checks it again
    # (a subscription's source checks the token with the access it needs).
    revalidate: Callable[[Viewer], Awaitable[Viewer | None]]
    keepalive: Keepalive
    init_timeout: float
    max_subscriptions: int
    send_queue: int
    presence: Presence | None = None
    quota: LiveQuota | None = None  # subscriptions and connections per user (live.quota)
    # The longest operation id a WebSocket client may choose (a longer one is a protocol error).
    max_operation_id_bytes: int = 128


async def execute_single(
    server: LiveServer,
    request: Request,
    context: dict[str, Any],
    transport: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """A query's or mutation's whole result, encoded; measured and counted under `transport`,
    in a server span as over plain HTTP (telemetry.traces.server), in the trace of the
    `traceparent` among `headers` (a stream's request's; a WebSocket's operation gives none)."""
    operations = server.operations
    started = record.clock()
    with traces.server(headers, request.kind.value, request.operation_name, transport, started) as answering:
        result = operations.result(await operations.execute(request, context))
        answering.answered(result)
    return operations.encode_payload(result)


async def start_subscription(
    server: LiveServer, request: Request, context: dict[str, Any], sink: Sink, holder: SlotHolder
) -> Subscription | list[dict] | None:
    """The running subscription; the formatted errors that refuse it (counted by code); or None
    when it ended while starting (its end is on the way to the client). Raises TryAgainLater.

    Past its user's limits (live.quota) it is refused with TOO_MANY_SUBSCRIPTIONS; the
    connection and its other operations carry on."""
    outcome = await _started(server, request, context, sink, holder)
    if isinstance(outcome, list):
        record.graphql_errors("subscription", record.error_codes({"errors": outcome}), holder.transport)
    return outcome


async def _started(
    server: LiveServer, request: Request, context: dict[str, Any], sink: Sink, holder: SlotHolder
) -> Subscription | list[dict] | None:
    operations = server.operations
    executor = Executor.build(
        operations.schema,
        request.document,
        context_value=context,
        raw_variable_values=request.variables,
        operation_name=request.operation_name,
    )
    if isinstance(executor, list):  # the variables did not coerce
        return [operations.format(error) for error in executor]
    stream = create_source_event_stream(executor)
    if isawaitable(stream):
        stream = await stream
    if isinstance(stream, ExecutionResult):
        errors = list(stream.errors or ())
        if any(is_unavailable(error) for error in errors):
            raise TryAgainLater
        return [operations.format(error) for error in errors]
    if not isinstance(stream, LiveSource):
        return [operations.format(GraphQLError("This subscription is not served here."))]
    slot = None
    if server.quota is not None:
        taken = await _take_slots(server.quota, stream.viewer.id, holder)
        if isinstance(taken, dict):
            return [taken]
        slot, connection = taken
        if sink.closed:  # gone while counting (its own close ran): nothing to start, nothing held
            slot.release()
            if connection is not None:
                connection.release()
            return None
    selection = Selection.of(request.document, request.query, request.operation_name, request.variables)
    try:
        with traces.step("chat subscribe", selection.field):
            outcome = await server.engine.subscribe(stream, selection, sink)
    except Exception as error:
        if slot is not None:
            slot.release()
        if is_unavailable(error):
            raise TryAgainLater from error
        raise
    if outcome is None or isinstance(outcome, GraphQLError):
        if slot is not None:
            slot.release()
        return None if outcome is None else [operations.format(outcome)]
    outcome.hold(slot)
    outcome.count(holder.transport)
    return outcome


async def _take_slots(quota: LiveQuota, user: int, holder: SlotHolder) -> tuple[Slot, Slot | None] | dict:
    """A subscription slot, and the holder's connection slot if it held none yet (taken here,
    once per holder: a stream's), or the refusal."""
    connection = None
    if holder.connection_slot is None:
        connection = await quota.take(CONNECTIONS, user)
        if connection is None:
            return too_many_subscriptions(CONNECTIONS, quota.limits[CONNECTIONS])
        if holder.connection_slot is None:
            holder.connection_slot = connection
        else:  # another of its operations took one meanwhile
            connection.release()
            connection = None
    subscription = await quota.take(SUBSCRIPTIONS, user)
    if subscription is None:
        return too_many_subscriptions(SUBSCRIPTIONS, quota.limits[SUBSCRIPTIONS])
    return subscription, connection


INTERNAL_ERROR = {"message": "Internal server error.", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
TOKEN_KEYS = ("authorization", "Authorization", "authToken", "token")


def token_in(payload: Any) -> str | None:
    """The bearer token of a `connection_init` payload, in any of the forms clients send it:
    `authorization`, `Authorization`, `authToken` or `token`, at the top or under `headers`."""
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers")
    for source in (payload, headers) if isinstance(headers, dict) else (payload,):
        for key in TOKEN_KEYS:
            value = source.get(key)
            if isinstance(value, str) and value.strip():
                return token_from_header(value)
    return None


def decode(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """A received WebSocket message as a protocol message: a JSON object with a string `type`;
    None for anything else (both protocols close with 4400)."""
    text = message.get("text")
    if text is None and message.get("bytes") is not None:
        text = message["bytes"].decode("utf-8", errors="replace")
    try:
        data = orjson.loads(text or "")
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("type"), str) else None


def too_many(limit: int) -> dict:
    return {
        "message": f"At most {limit} subscriptions per connection.",
        "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS"},
    }
