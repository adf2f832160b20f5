"""GraphQL over HTTP at /graphql: `POST` with a JSON body, `GET` for queries (and the explorer).

The answer's media type is negotiated (transports.media): `application/graphql-response+json`
when the client takes it, with the GraphQL-over-HTTP spec's status codes (a request refused
before execution 400); `application/json` otherwise, 200 for every well-formed GraphQL request,
as clients of that type expect. A malformed request gets 400 either way; an `Accept` we cannot
answer 406; a body that is not JSON 415; a mutation over GET 405; an answer whose only errors say
the server cannot serve it now (the pool's wait ran out, the database is away) 503 with
Retry-After, which clients and Heroku's router retry. Automatic persisted queries are resolved
here, before validation; operations that ask for a stream (SSE, Apollo's multipart) are handed
to `stream`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from ariadne.logger import log_error
from graphql import GraphQLError, OperationType
from starlette.datastructures import Headers
from starlette.requests import Request as HTTPRequest
from starlette.types import Receive, Scope, Send

from core.errors import as_service_unavailable
from execution.operations import Operations, Request, only_unavailable, valid_payload
from execution.persisted_queries import PersistedQueries, PersistedQueryError
from serving.uvicorn_protocols import NOT_COUNTED
from telemetry import record, traces
from transports.media import Accepted, Single, Streamed, negotiate

# Sent with every 503: the pool's wait ran out or the database is away (restarting, failing over).
RETRY_AFTER_SECONDS = 2
JSON = b"application/json"

ContextFactory = Callable[[HTTPRequest], Awaitable[Any]]
# Serves an operation whose client asked for a stream (transports.http_streams).
StreamServer = Callable[[Scope, Receive, Send, Request, Streamed], Awaitable[None]]


class Refusal(Exception):
    """A request refused before any operation ran: its status, error and headers."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"errors": [{"message": message, "extensions": {"code": code}}]}
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Streaming:
    """The request is served as a stream. An answer, not an exception: a raised one would keep
    the frames that read the request (its body, its JSON) alive for the stream's whole life."""

    request: Request
    kind: Streamed


class GraphQLOverHTTP:
    def __init__(
        self,
        operations: Operations,
        context: ContextFactory,
        explorer_html: str | None,
        *,
        stream: StreamServer | None = None,
        persisted: PersistedQueries | None = None,
        may_register: Callable[[HTTPRequest], Awaitable[bool]] | None = None,
    ) -> None:
        """`stream`: serves what asks for SSE or multipart (none: those are refused).
        `may_register`: whether this request may register a persisted query (the app: a
        signed-in user)."""
        self.operations = operations
        self.context = context
        self.explorer_html = explorer_html if operations.introspection else None
        self.logger = logging.getLogger(operations.logger)
        self.stream = stream
        self.persisted = persisted
        self.may_register = may_register

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = record.clock()
        accepted = negotiate(Headers(scope=scope).get("accept"))
        try:
            outcome = await self.answer(HTTPRequest(scope, receive), accepted)
        except Refusal as refusal:
            outcome = refusal.status, orjson.dumps(refusal.body), refusal.headers
        if isinstance(outcome, Streaming):
            assert self.stream is not None
            await self.stream(scope, receive, send, outcome.request, outcome.kind)
            return
        status, body, headers = outcome
        if isinstance(body, dict) and refused(body):
            scope[NOT_COUNTED] = True  # as cheap as a 4xx: not towards MAX_REQUESTS either
        media = (accepted.single or Single.JSON).value
        if isinstance(body, str):  # the explorer
            await _send(send, 200, body.encode(), {"content-type": "text/html; charset=utf-8"})
            record.http_request(scope["method"], "/graphql", 200, started)
            return
        encoded = body if isinstance(body, bytes) else self.operations.encode_payload(body)
        await _send(send, status, encoded, {"content-type": media, **headers})
        record.http_request(scope["method"], "/graphql", status, started)

    async def answer(
        self, request: HTTPRequest, accepted: Accepted
    ) -> tuple[int, bytes | str | dict, dict[str, str]] | Streaming:
        data = await self.data_of(request)
        if isinstance(data, str):
            return 200, data, {}
        if accepted.single is None and accepted.stream is None:
            raise Refusal(
                406,
                "Accept application/graphql-response+json, application/json, text/event-stream or multipart/mixed.",
                "NOT_ACCEPTABLE",
            )
        graphql_response = accepted.single is Single.GRAPHQL_RESPONSE
        digest = None
        if self.persisted is not None and isinstance(data, dict):
            try:
                data, digest = await self.persisted.resolve(data)
            except PersistedQueryError as error:
                raise Refusal(error.status, str(error), error.code) from None
        if not valid_payload(data):
            raise Refusal(400, _shape_error(data), "BAD_REQUEST")
        started = record.clock()
        prepared = self.operations.prepare(data)
        if isinstance(prepared, list):  # refused before anything ran: a request error
            return (400 if graphql_response or accepted.single is None else 200), {"errors": prepared}, {}
        if digest is not None and self.persisted is not None and await self._may_register(request):
            await self.persisted.register(digest, prepared.query)
        if request.method == "GET" and prepared.kind == OperationType.MUTATION:
            raise Refusal(405, "Mutations cannot be sent with GET; use POST.", "METHOD_NOT_ALLOWED", {"Allow": "POST"})
        streamed = accepted.stream is not None and self.stream is not None
        if prepared.kind == OperationType.SUBSCRIPTION or (streamed and accepted.single is None):
            if not streamed:
                raise Refusal(
                    400,
                    "Subscriptions are served over WebSocket, Server-Sent Events (Accept: text/event-stream) "
                    "and multipart HTTP (Apollo's HttpLink) at /graphql.",
                    "BAD_REQUEST",
                )
            assert accepted.stream is not None
            return Streaming(prepared, accepted.stream)
        kind, headers = prepared.kind.value, request.headers.raw
        with traces.server(headers, kind, prepared.operation_name, record.HTTP, started) as answering:
            try:
                context = await self.context(request)
            except Exception as error:  # before execution began: e.g. the token's lookup
                failure = self._context_failure(error)
                answering.answered(failure[1])
                return failure
            result = self.operations.result(await self.operations.execute(prepared, context))
            answering.answered(result)
        if only_unavailable(result.get("errors") or []):
            return 503, result, {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return 200, result, {}  # encoded by the caller, once it has seen whether it was refused

    async def _may_register(self, request: HTTPRequest) -> bool:
        """Only who the app allows registers (an anonymous request with hash and text is served,
        its document not kept); when the check itself fails, nothing is registered."""
        if self.may_register is None:
            return False
        try:
            return await self.may_register(request)
        except Exception as error:
            self.logger.warning("Persisted query not registered: %s", type(error).__name__)
            return False

    async def data_of(self, request: HTTPRequest) -> Any:
        """The operation's data; or the explorer's page, for a GET without a query."""
        if request.method == "GET":
            params = request.query_params
            if "query" not in params and "extensions" not in params:
                if self.explorer_html is None:
                    raise Refusal(405, "Send a query, or POST.", "METHOD_NOT_ALLOWED", {"Allow": "GET, POST"})
                return self.explorer_html
            return {
                "query": params.get("query"),
                "variables": _json_param(params, "variables"),
                "operationName": params.get("operationName") or None,
                "extensions": _json_param(params, "extensions"),
            }
        if request.method != "POST":
            raise Refusal(405, "Use GET or POST.", "METHOD_NOT_ALLOWED", {"Allow": "GET, POST"})
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower().encode()
        if content_type != JSON:
            raise Refusal(415, "Posted content must be of type application/json.", "UNSUPPORTED_MEDIA_TYPE")
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


def refused(result: dict) -> bool:
    """An answer that ran nothing: a request error (no `data`), or only rate limits' refusals."""
    if "data" not in result:
        return True
    errors = result.get("errors") or ()
    data = result["data"]
    return (
        bool(errors)
        and all((error.get("extensions") or {}).get("code") == "RATE_LIMITED" for error in errors)
        and (data is None or all(value is None for value in data.values()))
    )


def _json_param(params: Any, name: str) -> Any:
    raw = params.get(name)
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refusal(400, f"`{name}` is not valid JSON.", "BAD_REQUEST") from None


def _shape_error(data: Any) -> str:
    if not isinstance(data, dict):
        return "Operation data should be a JSON object"
    if not isinstance(data.get("query"), str):
        return "The query must be a string."
    if data.get("variables") is not None and not isinstance(data["variables"], dict):
        return "Query variables must be a null or an object."
    if data.get("extensions") is not None and not isinstance(data["extensions"], dict):
        return "Extensions must be a null or an object."
    return "The operation name must be a string."


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-length", str(len(body)).encode())]
    raw.extend((name.lower().encode(), value.encode()) for name, value in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
