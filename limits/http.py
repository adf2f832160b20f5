"""Ariadne's HTTP handler with clearer refusals: a malformed request gets a JSON error, a
mutation or subscription over GET gets 405 (GraphQL over HTTP) instead of a puzzling message,
and multipart bodies are not parsed at all."""

from typing import Any

from ariadne.asgi.handlers import GraphQLHTTPHandler
from ariadne.exceptions import HttpBadRequestError, HttpError
from ariadne.logger import log_error
from ariadne.utils import get_operation_type
from graphql import GraphQLError, OperationType
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from errors import as_service_unavailable
from execution.documents import parse_document
from execution.json import FastJSONResponse

# Sent with every 503: the pool's wait ran out or the database is away (restarting, failing over).
RETRY_AFTER_SECONDS = 2


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status, headers=headers)


def _operation_over_get(data: Any) -> OperationType | None:
    """The operation a GET asks for, or None when the document doesn't parse (validation reports it)."""
    try:
        return get_operation_type(parse_document(data["query"]), data.get("operationName"))
    except (GraphQLError, KeyError, TypeError):
        return None


def _only_unavailable(errors: list[dict]) -> bool:
    """The server could only not answer now (the pool's wait ran out, the database is away; in
    the context or in a resolver): clients and Heroku's router retry a 503."""
    return {error.get("extensions", {}).get("code") for error in errors} == {"SERVICE_UNAVAILABLE"}


def _status(success: bool, errors: list[dict]) -> int:
    """503 whenever SERVICE_UNAVAILABLE is the only error, even beside partial data (a nullable
    field that could not be read now); otherwise 200 for a result with data, 400 without."""
    if errors and _only_unavailable(errors):
        return 503
    return 200 if success else 400


def _graphql_response(result: dict, status: int) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return FastJSONResponse(result, status_code=status, headers=headers)


class JSONErrorsHTTPHandler(GraphQLHTTPHandler):
    async def extract_data_from_multipart_request(self, request: Request) -> Any:
        """The schema has no uploads, so multipart bodies (and their parser) are refused."""
        raise HttpBadRequestError("Posted content must be of type application/json")

    async def create_json_response(self, request: Request, result: dict, success: bool) -> Response:
        return _graphql_response(result, _status(success, result.get("errors") or []))

    async def graphql_http_server(self, request: Request) -> Response:
        try:
            data = await self.extract_data_from_request(request)
        except HttpError as error:
            return _error(400, error.message or "Bad request.", "BAD_REQUEST")
        if request.method == "GET" and _operation_over_get(data) not in (None, OperationType.QUERY):
            return _error(405, "Only queries can be sent with GET; use POST.", "METHOD_NOT_ALLOWED", {"Allow": "POST"})
        try:
            success, result = await self.execute_graphql_query(request, data)
        except Exception as error:  # before execution began: building the context (token lookup)
            return self._context_failure(error)
        return await self.create_json_response(request, result, success)

    def _context_failure(self, error: Exception) -> Response:
        if not isinstance(error, GraphQLError):  # a database outage is counted in its own log
            error = as_service_unavailable(error) or error
        if isinstance(error, GraphQLError):  # e.g. SERVICE_UNAVAILABLE from a busy pool or an outage
            formatted = self.error_formatter(error, self.debug)
            return _graphql_response({"errors": [formatted]}, _status(False, [formatted]))
        log_error(GraphQLError(str(error), original_error=error), self.logger)
        return _error(500, "Internal server error.", "INTERNAL_SERVER_ERROR")
