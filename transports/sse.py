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
"""

from __future__ import annotations

from transports.stream import Stream

MEDIA_TYPE = b"text/event-stream; charset=utf-8"
COMMENT = b":\n\n"
COMPLETE = b"event: complete\ndata: \n\n"


class SSEStream(Stream):
    HEADERS = (
        (b"content-type", MEDIA_TYPE),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # proxies that buffer (nginx) pass each event on at once
    )
    PREAMBLE = COMMENT
    HEARTBEAT = COMMENT
    __slots__ = ()

    def result(self, payload: bytes, event_id: str | None) -> bytes:
        # orjson's output has no newline: the whole result is one `data:` line.
        if event_id is None:
            return b"event: next\ndata: " + payload + b"\n\n"
        return b"id: " + event_id.encode() + b"\nevent: next\ndata: " + payload + b"\n\n"

    def end_frame(self) -> bytes:
        return COMPLETE
