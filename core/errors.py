"""GraphQL errors that carry `extensions.code`, and the formatter that hides everything else.

Clients branch on the code; an unexpected exception is logged with its traceback by Ariadne
and reaches the client only as a generic INTERNAL_SERVER_ERROR. A database outage is not
unexpected: it reaches the client as SERVICE_UNAVAILABLE, which clients retry.
"""

from typing import Any

from ariadne.utils import unwrap_graphql_error
from graphql import GraphQLError

from core.outages import is_database_unavailable, outages
from core.reaches import written_against

# A reach (core/reaches.py): request errors are told apart by the texts graphql-core gives
# them; tests/test_library_reaches.py fails loudly when those change.
WRITTEN_AGAINST = written_against("graphql-core")


class CodedError(GraphQLError):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": self.code, **extensions})


class Unauthenticated(CodedError):
    code = "UNAUTHENTICATED"


class Forbidden(CodedError):
    code = "FORBIDDEN"


class NotFound(CodedError):
    code = "NOT_FOUND"


class BadUserInput(CodedError):
    code = "BAD_USER_INPUT"


def format_error(error: GraphQLError, debug: bool = False) -> dict:
    original = unwrap_graphql_error(error)
    if original is not None and original is not error and not isinstance(original, GraphQLError):
        unavailable = as_service_unavailable(original)
        if unavailable is None:
            message, code = "Internal server error.", "INTERNAL_SERVER_ERROR"
        else:
            message, code = unavailable.message, str(unavailable.code)
        formatted: dict[str, Any] = {"message": message}
        if error.locations:
            formatted["locations"] = [loc._asdict() for loc in error.locations]
        if error.path:
            formatted["path"] = error.path
        formatted["extensions"] = {"code": code}
        return formatted
    formatted = dict(error.formatted)
    extensions = dict(formatted.get("extensions") or {})
    extensions.setdefault("code", code_for_request_error(error))
    formatted["extensions"] = extensions
    return formatted


def code_for_request_error(error: GraphQLError) -> str:
    """Codes for errors graphql-core raises before any resolver runs (Apollo's names), told
    apart by their texts: graphql-core gives them neither a code nor a type of their own. (The
    cost and shape rules, limits.query_shape, give their refusals their code.)"""
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable ") or "runtime value" in error.message:
        return "BAD_USER_INPUT"  # the second is the cost rule's word for a missing variable
    return "GRAPHQL_VALIDATION_FAILED"


class ServiceUnavailable(CodedError):
    code = "SERVICE_UNAVAILABLE"


DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly."


class DatabaseUnavailable(ServiceUnavailable):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(DATABASE_UNAVAILABLE)
        self.__cause__ = cause


def as_service_unavailable(error: BaseException) -> ServiceUnavailable | None:
    """The SERVICE_UNAVAILABLE error a client is shown for `error`, or None when `error` is
    something else. A database outage found here is counted in the outage log (one warning, not
    a traceback per request); callers need not log it again."""
    if isinstance(error, ServiceUnavailable):
        return error
    if is_database_unavailable(error):
        outages.refused(error)
        return DatabaseUnavailable(error)
    return None
