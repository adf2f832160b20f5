"""What reaches the logs. Never passwords, tokens or message bodies: those travel in request
bodies (never logged), in GraphQL documents and variables (never logged), or in a GET's query
string (stripped from access lines here)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

import orjson
from ariadne.utils import unwrap_graphql_error
from graphql import GraphQLError
from opentelemetry import trace

from core.errors import code_for_request_error
from core.reaches import written_against

# A reach (core/reaches.py): the shape of uvicorn's access-log arguments (StripQueryString);
# tests/test_library_reaches.py fails loudly when uvicorn changes it.
WRITTEN_AGAINST = written_against("uvicorn")


class ExpectedErrorFilter(logging.Filter):
    """Ariadne logs every GraphQL error with a traceback; only unexpected ones deserve it.

    A client's mistake (a coded error, a syntax or validation error) is logged on one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, GraphQLError):
            original = unwrap_graphql_error(error)
            if original is None or original is error or isinstance(original, GraphQLError):
                code = (error.extensions or {}).get("code") or code_for_request_error(error)
                record.levelno, record.levelname = logging.INFO, "INFO"
                record.msg, record.args, record.exc_info, record.exc_text = f"GraphQL error {code}", (), None, None
        return True


class StripQueryString(logging.Filter):
    """uvicorn's access line is (client, method, path with query, http version, status): not its
    public API, a reach (core/reaches.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0] + "?…", args[3], args[4])
        return True


# Heroku's X-Request-ID of the request (or WebSocket) being served, set by the app for each: on
# every line logged while serving it (JSONFormatter's `request_id`, RequestIdText's suffix).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class JSONFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json, for log drains): time, level, logger, message,
    and the request id and trace id of the request it was logged for, when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class RequestIdText(logging.Formatter):
    """The readable text format, as the handler had it (`inner`: basicConfig's, gunicorn's access
    and error formats), with ` request_id=<X-Request-ID>` ending the first line of each record
    logged while a request (or WebSocket) with one is served: grep it to find all of a request's
    lines. A record logged outside any request is left as it was."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        request_id = REQUEST_ID.get()
        if not request_id:
            return text
        first, newline, rest = text.partition("\n")  # after the message, before any traceback
        return f"{first} request_id={request_id}{newline}{rest}"


# gunicorn's and uvicorn's own loggers have handlers of their own (gunicorn's error and access logs).
SERVER_LOGGERS = ("gunicorn.error", "gunicorn.access", "uvicorn", "uvicorn.error", "uvicorn.access")


def configure(level: str, log_format: str = "text") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    handlers = [
        *logging.getLogger().handlers,
        *(handler for name in SERVER_LOGGERS for handler in logging.getLogger(name).handlers),
    ]
    json_formatter = JSONFormatter()
    for handler in handlers:
        if log_format == "json":
            handler.setFormatter(json_formatter)
        elif not isinstance(handler.formatter, RequestIdText):  # a handler two loggers share: once
            handler.setFormatter(RequestIdText(handler.formatter))
    logging.getLogger("chat.graphql").addFilter(ExpectedErrorFilter())
    logging.getLogger("uvicorn.access").addFilter(StripQueryString())
    # At DEBUG, `databases` logs every query's arguments: password hashes, tokens' digests, bodies.
    logging.getLogger("databases").setLevel(max(logging.INFO, logging.getLogger().level))
    # httpx logs every webhook delivery's URL (which may carry a credential) at INFO; the
    # dispatcher logs what went wrong itself (transports.webhooks).
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
