"""Running one GraphQL operation for a WebSocket protocol, on graphql-core's public functions.

Both protocols parse, validate and execute the same way; they differ only in how they frame
what comes out. A subscription whose source returns a `LiveSource` goes to the live engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, TypeGuard

import orjson
from ariadne.logger import log_error
from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutionResult,
    Executor,
    GraphQLError,
    GraphQLSchema,
    NoSchemaIntrospectionCustomRule,
    OperationType,
    execute,
    get_operation_ast,
)
from graphql.execution import create_source_event_stream

from auth import Viewer, token_from_header
from errors import ServiceUnavailable
from execution.documents import parse_document, query_validator
from realtime.engine import Engine, Selection, Sink, Subscription
from realtime.keepalive import Keepalive
from realtime.live import LiveSource

logger = logging.getLogger("chat.websocket")

ContextFactory = Callable[[Viewer | None, Any], dict[str, Any]]
RulesFactory = Callable[[dict[str, Any] | None], Collection[type[ASTValidationRule]]]
Authenticate = Callable[[str | None], Awaitable[Viewer | None]]
ErrorFormatter = Callable[[GraphQLError, bool], dict]


@dataclass
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


@dataclass
class LiveServer:
    """What the WebSocket protocols need to serve operations; built once by the app factory."""

    schema: GraphQLSchema
    engine: Engine
    context: ContextFactory  # (viewer, connection) -> the resolvers' context
    authenticate: Authenticate  # a bearer token -> its viewer, read from the database
    # The connection's viewer if its token is still valid: a query or mutation checks it again
    # (a subscription's source checks the token with the access it needs).
    revalidate: Callable[[Viewer], Awaitable[Viewer | None]]
    validation_rules: RulesFactory  # per request: the cost rule reads the variables
    error_formatter: ErrorFormatter
    keepalive: Keepalive
    init_timeout: float
    max_subscriptions: int
    send_queue: int
    introspection: bool = True
    debug: bool = False
    logger: str = "chat.graphql"

    def format(self, error: GraphQLError) -> dict:
        log_error(error, self.logger)
        return self.error_formatter(error, self.debug)


@dataclass(frozen=True)
class Request:
    """A `subscribe` (or legacy `start`) payload that parsed, validated and names an operation."""

    document: DocumentNode
    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    kind: OperationType


def valid_payload(payload: Any) -> TypeGuard[dict[str, Any]]:
    """The shape both protocols require: a query string, optional variables and operation name."""
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("query"), str)
        and isinstance(payload.get("variables") or {}, dict)
        and isinstance(payload.get("operationName") or "", str)
    )


def prepare(server: LiveServer, payload: dict[str, Any]) -> Request | list[dict]:
    """The request, or the formatted errors that refuse it before anything runs."""
    query, name, variables = payload["query"], payload.get("operationName") or None, payload.get("variables")
    try:
        document = parse_document(query)
    except GraphQLError as error:
        return [server.format(error)]
    operation = get_operation_ast(document, name)
    if operation is None:
        message = f"Unknown operation named '{name}'." if name else "Must provide an operation."
        return [server.format(GraphQLError(message, extensions={"code": "GRAPHQL_VALIDATION_FAILED"}))]
    rules = list(server.validation_rules(variables))
    if not server.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    errors = query_validator(server.schema, document, rules)
    if errors:
        return [server.format(error) for error in errors]
    return Request(document, query, name, variables, operation.operation)


async def execute_single(server: LiveServer, request: Request, viewer: Viewer | None, connection: Any) -> bytes:
    """A query's or mutation's whole result, encoded."""
    result = execute(
        server.schema,
        request.document,
        context_value=server.context(viewer, connection),
        variable_values=request.variables,
        operation_name=request.operation_name,
    )
    if isawaitable(result):
        result = await result
    assert isinstance(result, ExecutionResult)
    return encode_result(server, result)


def encode_result(server: LiveServer, result: ExecutionResult) -> bytes:
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [server.format(error) for error in result.errors]
    return orjson.dumps(payload)


async def start_subscription(
    server: LiveServer, request: Request, viewer: Viewer | None, connection: Any, sink: Sink
) -> Subscription | list[dict] | None:
    """The running subscription; the formatted errors that refuse it; or None when it ended
    while starting (its end is on the way to the client). Raises TryAgainLater."""
    executor = Executor.build(
        server.schema,
        request.document,
        context_value=server.context(viewer, connection),
        raw_variable_values=request.variables,
        operation_name=request.operation_name,
    )
    if isinstance(executor, list):  # the variables did not coerce
        return [server.format(error) for error in executor]
    stream = create_source_event_stream(executor)
    if isawaitable(stream):
        stream = await stream
    if isinstance(stream, ExecutionResult):
        errors = list(stream.errors or ())
        if any(is_unavailable(error) for error in errors):
            raise TryAgainLater
        return [server.format(error) for error in errors]
    if not isinstance(stream, LiveSource):
        return [server.format(GraphQLError("This subscription is not served here."))]
    selection = Selection.of(request.document, request.query, request.operation_name, request.variables)
    try:
        outcome = await server.engine.subscribe(stream, selection, sink)
    except Exception as error:
        if is_unavailable(error):
            raise TryAgainLater from error
        raise
    if isinstance(outcome, GraphQLError):
        return [server.format(outcome)]
    return outcome


def is_unavailable(error: BaseException) -> bool:
    """The database (or its pool) could not serve us now: the client should come back shortly."""
    current: BaseException | None = error
    for _ in range(5):  # graphql-core wraps a resolver's (coded) error in a located one
        if current is None:
            break
        if isinstance(current, ServiceUnavailable):
            return True
        current = current.original_error if isinstance(current, GraphQLError) else current.__cause__
    return False


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
