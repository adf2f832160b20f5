"""What reaches the logs. Never passwords, tokens or message bodies: those travel in request
bodies (never logged), in GraphQL documents and variables (never logged), or in a GET's query
string (stripped from access lines here)."""

from __future__ import annotations

import logging

from ariadne.utils import unwrap_graphql_error
from graphql import GraphQLError

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


def configure(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("chat.graphql").addFilter(ExpectedErrorFilter())
    logging.getLogger("uvicorn.access").addFilter(StripQueryString())
    # At DEBUG, `databases` logs every query's arguments: password hashes, tokens' digests, bodies.
    logging.getLogger("databases").setLevel(max(logging.INFO, logging.getLogger().level))
    # httpx logs every webhook delivery's URL (which may carry a credential) at INFO; the
    # dispatcher logs what went wrong itself (transports.webhooks).
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
