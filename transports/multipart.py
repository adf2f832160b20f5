"""Apollo's multipart HTTP subscriptions (subscriptionSpec 1.0), as Apollo Client's `HttpLink`
asks for them: `Accept: multipart/mixed;boundary="graphql";subscriptionSpec=1.0` on a POST.

    (at once, then every 5 s)  a heartbeat part: `{}`
    each result                a part `{"payload": <result>}`; a refusal or a revocation is a
                               result with its errors, then the end
    cannot be served now       a part `{"payload": null, "errors": [SERVICE_UNAVAILABLE]}`, then the end
    the end                    the closing delimiter `--graphql--`

Each part is followed at once by the delimiter (`\\r\\n--graphql`), as Apollo Router writes
them: a client hands a part on only when the delimiter after it has arrived. The stream opens
with a delimiter and ends with `--` after the last one. When the viewer cannot be told now (the
database away) the request gets a 503 with Retry-After before any stream opens. Every frame of
this protocol is built here; transports.stream runs the operation.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from execution.operations import Request
from identity.auth import Viewer
from telemetry import record
from transports.keepalive import Keepalive
from transports.operations import LiveServer
from transports.stream import RETRY_AFTER_SECONDS, Stream, StreamFraming

MEDIA_TYPE = b'multipart/mixed;boundary="graphql";subscriptionSpec="1.0"'
DELIMITER = b"\r\n--graphql"
PART = b"\r\ncontent-type: application/json; charset=utf-8\r\n\r\n"
HEARTBEAT = PART + b"{}" + DELIMITER
END = b"--\r\n"
UNAVAILABLE = {
    "message": "The server cannot serve this now; try again shortly.",
    "extensions": {"code": "SERVICE_UNAVAILABLE"},
}


def result(payload: bytes, event_id: str | None) -> bytes:
    return PART + b'{"payload":' + payload + b"}" + DELIMITER


def refusal(errors: list[dict]) -> bytes:
    return result(orjson.dumps({"errors": errors}), None)


FRAMING = StreamFraming(
    headers=((b"content-type", MEDIA_TYPE), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")),
    preamble=DELIMITER + HEARTBEAT,
    heartbeat=HEARTBEAT,
    result=result,
    refusal=refusal,
    end=END,
    unavailable=PART + orjson.dumps({"payload": None, "errors": [UNAVAILABLE]}) + DELIMITER,
    transport=record.MULTIPART,
)


def serve(
    server: LiveServer,
    keepalive: Keepalive,
    scope: Scope,
    receive: Receive,
    send: Send,
    request: Request,
    viewer: Viewer | None,
    context: dict,
) -> Coroutine[Any, Any, None]:
    # The stream's coroutine itself, not one awaiting it: every open stream holds one frame fewer.
    return Stream(server, keepalive, FRAMING).serve(scope, receive, send, request, viewer, context)


async def unavailable(server: LiveServer, keepalive: Keepalive, scope: Scope, receive: Receive, send: Send) -> None:
    """The viewer cannot be told now: 503 with Retry-After, which Apollo Client reports and the
    application retries."""
    body = orjson.dumps({"errors": [UNAVAILABLE]})
    await Response(body, 503, {"retry-after": str(RETRY_AFTER_SECONDS)}, "application/json")(scope, receive, send)
