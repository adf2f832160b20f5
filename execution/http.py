"""GraphQL over HTTP at /graphql: `POST` with a JSON body, `GET` for queries (and the explorer).

A malformed request gets a JSON error and a 4xx status; a mutation over GET 405 (GraphQL over
HTTP); an answer whose only errors say the server cannot serve it now (the pool's wait ran out,
the database is away) 503 with Retry-After, which clients and Heroku's router retry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from ariadne.logger import log_error
from graphql import GraphQLError, OperationType
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from errors import as_service_unavailable
from execution.operations import Operations, only_unavailable, valid_payload

# Sent with every 503: the pool's wait ran out or the database is away (restarting, failing over).
RETRY_AFTER_SECONDS = 2
JSON = b"application/json"

ContextFactory = Callable[[Request], Awaitable[Any]]


class Refusal(Exception):
    """A request refused before any operation ran: its status, error and headers."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"errors": [{"message": message, "extensions": {"code": code}}]}
        self.headers = headers or {}


class GraphQLOverHTTP:
    def __init__(self, operations: Operations, context: ContextFactory, explorer_html: str | None) -> None:
        self.operations = operations
        self.context = context
        self.explorer_html = explorer_html if operations.introspection else None
        self.logger = logging.getLogger(operations.logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            status, body, headers = await self.answer(request)
        except Refusal as refusal:
            status, body, headers = refusal.status, orjson.dumps(refusal.body), refusal.headers
        if status == 200 and isinstance(body, str):  # the explorer
            await _send(send, 200, body.encode(), {"content-type": "text/html; charset=utf-8"})
            return
        await _send(send, status, body if isinstance(body, bytes) else orjson.dumps(body), headers)

    async def answer(self, request: Request) -> tuple[int, bytes | str | dict, dict[str, str]]:
        data = await self.data_of(request)
        if isinstance(data, str):
            return 200, data, {}
        if not valid_payload(data):
            raise Refusal(400, _shape_error(data), "BAD_REQUEST")
        prepared = self.operations.prepare(data)
        if isinstance(prepared, list):
            return 400, {"errors": prepared}, {}
        if request.method == "GET" and prepared.kind != OperationType.QUERY:
            raise Refusal(405, "Only queries can be sent with GET; use POST.", "METHOD_NOT_ALLOWED", {"Allow": "POST"})
        if prepared.kind == OperationType.SUBSCRIPTION:
            raise Refusal(400, "Subscriptions are served over WebSocket at /graphql.", "BAD_REQUEST")
        try:
            context = await self.context(request)
        except Exception as error:  # before execution began: e.g. the token's lookup
            return self._context_failure(error)
        result = self.operations.result(await self.operations.execute(prepared, context))
        errors = result.get("errors") or []
        if only_unavailable(errors):
            return 503, result, {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return (200 if result["data"] is not None else 400), result, {}

    async def data_of(self, request: Request) -> Any:
        """The operation's data; or the explorer's page, for a GET without a query."""
        if request.method == "GET":
            params = request.query_params
            if "query" not in params:
                if self.explorer_html is None:
                    raise Refusal(405, "Send a query, or POST.", "METHOD_NOT_ALLOWED", {"Allow": "GET, POST"})
                return self.explorer_html
            try:
                variables = orjson.loads(params["variables"]) if params.get("variables") else None
            except orjson.JSONDecodeError:
                raise Refusal(400, "`variables` is not valid JSON.", "BAD_REQUEST") from None
            return {"query": params["query"], "variables": variables, "operationName": params.get("operationName")}
        if request.method != "POST":
            raise Refusal(405, "Use GET or POST.", "METHOD_NOT_ALLOWED", {"Allow": "GET, POST"})
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower().encode()
        if content_type != JSON:
            raise Refusal(400, "Posted content must be of type application/json", "BAD_REQUEST")
        try:
            return orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise Refusal(400, "Request body is not a valid JSON", "BAD_REQUEST") from None

    def _context_failure(self, error: Exception) -> tuple[int, dict, dict[str, str]]:
        coded = error if isinstance(error, GraphQLError) else as_service_unavailable(error)
        if coded is None:
            log_error(GraphQLError(str(error), original_error=error), self.logger)
            raise Refusal(500, "Internal server error.", "INTERNAL_SERVER_ERROR") from error
        formatted = [self.operations.format(coded)]
        if only_unavailable(formatted):
            return 503, {"errors": formatted}, {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return 400, {"errors": formatted}, {}


def _shape_error(data: Any) -> str:
    if not isinstance(data, dict):
        return "Operation data should be a JSON object"
    if not isinstance(data.get("query"), str):
        return "The query must be a string."
    if not isinstance(data.get("variables") or {}, dict):
        return "Query variables must be a null or an object."
    return "The operation name must be a string."


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
    for name, value in headers.items():
        if name.lower() == "content-type":
            raw[0] = (b"content-type", value.encode())
        else:
            raw.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
