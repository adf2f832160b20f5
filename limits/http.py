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

from execution.documents import parse_document
from execution.json import FastJSONResponse


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status, headers=headers)


def _operation_over_get(data: Any) -> OperationType | None:
    """The operation a GET asks for, or None when the document doesn't parse (validation reports it)."""
    try:
        return get_operation_type(parse_document(data["query"]), data.get("operationName"))
    except (GraphQLError, KeyError, TypeError):
        return None


def _failure_status(errors: list[dict]) -> int:
    """503 when the server was only too busy (the pool's wait ran out, in the context or in a
    resolver): clients and Heroku's router retry that; 400 for everything else."""
    codes = {error.get("extensions", {}).get("code") for error in errors}
    return 503 if codes == {"SERVICE_UNAVAILABLE"} else 400


class JSONErrorsHTTPHandler(GraphQLHTTPHandler):
    async def extract_data_from_multipart_request(self, request: Request) -> Any:
        """The schema has no uploads, so multipart bodies (and their parser) are refused."""
        raise HttpBadRequestError("Posted content must be of type application/json")

    async def create_json_response(self, request: Request, result: dict, success: bool) -> Response:
        return FastJSONResponse(result, status_code=200 if success else _failure_status(result.get("errors", [])))

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
        if isinstance(error, GraphQLError):  # e.g. SERVICE_UNAVAILABLE from a busy pool
            formatted = self.error_formatter(error, self.debug)
            return FastJSONResponse({"errors": [formatted]}, status_code=_failure_status([formatted]))
        log_error(GraphQLError(str(error), original_error=error), self.logger)
        return _error(500, "Internal server error.", "INTERNAL_SERVER_ERROR")
