"""One GraphQL operation, the same way on every transport: decoded, parsed and validated (both
cached by text), then executed, its errors formatted and logged, its result encoded once. Built
on graphql-core's public functions; HTTP, both WebSocket protocols and the streaming transports
differ only in how they frame what comes out.

`executed` and `Results` are the execute-and-format path itself: queries and mutations take it
through `Operations`, and the live engine takes it for each event of a subscription.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    execute_root_selection_set,
    get_operation_ast,
    specified_rules,
)
from graphql.execution.values import get_variable_values

from core.errors import ServiceUnavailable
from execution.documents import Validator, VariableRule, parse_document, text_bytes
from execution.lean_executor import LeanExecutor

ErrorFormatter = Callable[[GraphQLError, bool], dict]
RootExecution = Callable[[Executor], Any]


async def executed(
    executor: Executor | list[GraphQLError], run: RootExecution = execute_root_selection_set
) -> ExecutionResult:
    """The result of running a built executor (`run`: graphql-core's root execution for a query
    or mutation, `execute_subscription_event` for one event), or of the errors that kept it
    from being built (variables that did not coerce)."""
    if isinstance(executor, list):
        return ExecutionResult(None, errors=executor)
    result = run(executor)
    if isawaitable(result):
        result = await result
    assert isinstance(result, ExecutionResult)
    return result


@dataclass(frozen=True)
class Results:
    """How this service formats and logs an operation's errors, and encodes its result once,
    bounded: every operation's result, whichever transport or engine produced it, goes out
    this way."""

    error_formatter: ErrorFormatter
    debug: bool = False
    logger: str = "chat.graphql"
    # An encoded result longer than this is replaced by a RESPONSE_TOO_LARGE error (None: any).
    max_bytes: int | None = None
    # What the RESPONSE_TOO_LARGE message calls the bytes (a query's response, an event's result).
    noun: str = "response"

    def format(self, error: GraphQLError) -> dict:
        """An error the client is told of, logged."""
        log_error(error, self.logger)
        return self.error_formatter(error, self.debug)

    def refusal(self, error: GraphQLError) -> dict:
        """An error that ends or refuses an operation as expected (a revoked token, a member who
        left): formatted, not logged."""
        return self.error_formatter(error, self.debug)

    def result(self, result: ExecutionResult) -> dict[str, Any]:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [self.format(error) for error in result.errors]
        return payload

    def encode(self, result: ExecutionResult) -> bytes:
        return self.encode_payload(self.result(result))

    def encode_payload(self, payload: dict[str, Any]) -> bytes:
        """The payload encoded; if that is longer than `max_bytes`, an error instead (the work is
        done by then, but the bytes never reach a socket's buffers or the client)."""
        encoded = orjson.dumps(payload)
        if self.max_bytes is None or len(encoded) <= self.max_bytes:
            return encoded
        return orjson.dumps(self.too_large(len(encoded)))

    def too_large(self, size: int) -> dict[str, Any]:
        message = f"The {self.noun} ({size} bytes) is longer than {self.max_bytes} bytes: select less."
        return {"data": None, "errors": [self.format(GraphQLError(message, extensions={"code": "RESPONSE_TOO_LARGE"}))]}


@dataclass(frozen=True)
class Request:
    """An operation that parsed, validated and names an operation of its document."""

    document: DocumentNode
    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    kind: OperationType


def valid_payload(payload: Any) -> TypeGuard[dict[str, Any]]:
    """The shape every transport requires: a query string; variables, operation name and
    extensions absent, null, or of their type."""
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("query"), str)
        and all(_absent_or(payload.get(key), kind) for key, kind in _OPTIONAL)
    )


_OPTIONAL = (("variables", dict), ("operationName", str), ("extensions", dict))


def _absent_or(value: Any, kind: type) -> bool:
    return value is None or isinstance(value, kind)


@dataclass
class Operations:
    """The schema and how this service validates, formats and logs its operations."""

    schema: GraphQLSchema
    error_formatter: ErrorFormatter
    rules: Sequence[type[ASTValidationRule]] = ()  # beside graphql-core's own
    variable_rule: VariableRule | None = None  # reads the variables too
    introspection: bool = True
    debug: bool = False
    logger: str = "chat.graphql"
    # A longer query text is refused before it is parsed (QUERY_TOO_LARGE).
    max_query_bytes: int = 32 * 1024
    # An encoded result longer than this is replaced by a RESPONSE_TOO_LARGE error.
    max_response_bytes: int = 4 * 1024 * 1024

    results: Results = field(init=False)

    def __post_init__(self) -> None:
        rules = [*specified_rules, *self.rules]
        if not self.introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        self.validator = Validator(self.schema, rules, self.variable_rule)
        self.results = Results(self.error_formatter, self.debug, self.logger, self.max_response_bytes)

    def format(self, error: GraphQLError) -> dict:
        return self.results.format(error)

    def prepare(self, payload: dict[str, Any]) -> Request | list[dict]:
        """The request, or the formatted errors that refuse it before anything runs."""
        query, name, variables = payload["query"], payload.get("operationName") or None, payload.get("variables")
        if len(query) > self.max_query_bytes or text_bytes(query) > self.max_query_bytes:
            # Before parsing: the text is never parsed, validated, cached or persisted.
            message = f"The query text is longer than {self.max_query_bytes} bytes."
            return [self.format(GraphQLError(message, extensions={"code": "QUERY_TOO_LARGE"}))]
        try:
            document = parse_document(query)
        except GraphQLError as error:
            return [self.format(error)]
        operation = get_operation_ast(document, name)
        if operation is None:
            message = f"Unknown operation named '{name}'." if name else "Must provide an operation."
            return [self.format(GraphQLError(message, extensions={"code": "GRAPHQL_VALIDATION_FAILED"}))]
        errors = self.validator.errors(query, document, variables)
        if errors:
            return [self.format(error) for error in errors]
        if operation.variable_definitions:
            # Refused here, not by the executor, so every transport answers them as the request
            # errors they are (GraphQL over HTTP: 400, before anything runs).
            coerced = get_variable_values(self.schema, operation.variable_definitions, variables or {})
            if isinstance(coerced, list):
                return [self.format(error) for error in coerced]
        return Request(document, query, name, variables, operation.operation)

    async def execute(self, request: Request, context: Any) -> ExecutionResult:
        """A query or mutation, without incremental delivery (no @defer or @stream here): the
        plain executor costs a quarter less than `execute`'s incremental one."""
        executor = LeanExecutor.build(
            self.schema,
            request.document,
            context_value=context,
            raw_variable_values=request.variables,
            operation_name=request.operation_name,
        )
        return await executed(executor)

    def result(self, result: ExecutionResult) -> dict[str, Any]:
        return self.results.result(result)

    def encode(self, result: ExecutionResult) -> bytes:
        return self.results.encode(result)

    def encode_payload(self, payload: dict[str, Any]) -> bytes:
        return self.results.encode_payload(payload)

    def too_large(self, size: int) -> dict[str, Any]:
        return self.results.too_large(size)


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


def only_unavailable(errors: list[dict]) -> bool:
    """Every error is SERVICE_UNAVAILABLE: the server could only not answer now (clients and
    Heroku's router retry that), not a problem with the request."""
    return bool(errors) and {error.get("extensions", {}).get("code") for error in errors} == {"SERVICE_UNAVAILABLE"}
