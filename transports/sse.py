"""GraphQL over Server-Sent Events, the "distinct connections" mode of graphql-sse's PROTOCOL.md:
one operation per request (`Accept: text/event-stream`, GET or POST at /graphql).

    (at once)        a comment, so the client and every proxy see the stream open
    each result      `id: <event id>` (where it has one), `event: next`, `data: <result>`
    every 15 s       a comment (Heroku's router cuts a response silent for 55 s)
    the end          `event: complete` (the operation ended: the client must not reconnect)
    no end frame     the worker is stopping, the server cannot serve it now, or the client read
                     too slowly: an EventSource reconnects by itself and sends `Last-Event-ID`

A result's id is its place in the room's log (`roomEvents`) or its message id
(`messageCreated`): exactly what the subscription's `after` takes, so the `Last-Event-ID` of a
reconnecting EventSource resumes it gap-free (transports.http_streams passes it on).

A refusal (errors before the operation ran, or a revocation) is a `next` with only `errors`, then
`complete`. When the viewer cannot be told now (the database away) the stream opens and ends
at once: an EventSource gives up for good on an answer other than 200, so an outage is said
this way. Every frame of this protocol is built here; transports.stream runs the operation.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from execution.operations import Request
from identity.auth import Viewer
from telemetry import record
from transports.keepalive import Keepalive
from transports.operations import LiveServer
from transports.stream import Stream, StreamFraming

MEDIA_TYPE = b"text/event-stream; charset=utf-8"
COMMENT = b":\n\n"
COMPLETE = b"event: complete\ndata: \n\n"


def result(payload: bytes, event_id: str | None) -> bytes:
    # orjson's output has no newline: the whole result is one `data:` line.
    if event_id is None:
        return b"event: next\ndata: " + payload + b"\n\n"
    return b"id: " + event_id.encode() + b"\nevent: next\ndata: " + payload + b"\n\n"


def refusal(errors: list[dict]) -> bytes:
    return result(orjson.dumps({"errors": errors}), None)


FRAMING = StreamFraming(
    headers=(
        (b"content-type", MEDIA_TYPE),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # proxies that buffer (nginx) pass each event on at once
    ),
    preamble=COMMENT,
    heartbeat=COMMENT,
    result=result,
    refusal=refusal,
    end=COMPLETE,
    unavailable=None,  # the stream ends without `complete`: an EventSource reconnects by itself
    transport=record.SSE,
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
    """The viewer cannot be told now: a stream that ends at once, which an EventSource retries."""
    await Stream(server, keepalive, FRAMING).cut(scope, receive, send)
