"""Refuse oversized request bodies with a 413 the client can read.

A server that answers and closes while the client is still sending leaves unread bytes in its
socket: the kernel then resets the connection, and the client reports the reset instead of the
answer (Node's fetch as soon as its write fails; httpx when the reset reaches it first). So the
rest of an oversized body is read and dropped first, within a bound, and the 413 follows.
Each chunk is counted and let go: memory stays flat.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# How much of a refused body is read and dropped before the answer, as a multiple of the limit
# and in time: a client that overshoots by a few times the limit still reads its answer, while a
# refused body costs the worker no more than a few bodies it would accept, and never long.
DRAIN_FACTOR = 4
DRAIN_SECONDS = 5.0


class BodyTooLarge(Exception):
    """Raised by the app's receive() when the body passes the limit; carries where it stopped."""

    def __init__(self, received: int, more_body: bool) -> None:
        super().__init__(received)
        self.received = received
        self.more_body = more_body


def _too_large(limit: int, *, close: bool) -> list[Message]:
    """The 413 with the JSON error; `close` when the body was not read to its end, since the
    connection's next bytes would be the rest of it, not a new request."""
    body = json.dumps(
        {
            "errors": [
                {"message": f"Request body is larger than {limit} bytes.", "extensions": {"code": "PAYLOAD_TOO_LARGE"}}
            ]
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    return [
        {"type": "http.response.start", "status": 413, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _expects_continue(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in headers)


class BodySizeLimitMiddleware:
    """A declared Content-Length over the limit is refused before the app runs; a chunked body is
    counted as the app reads it and refused once it passes the limit. Either way the rest is
    drained (up to `drain_bytes` in all and `drain_seconds`) before the 413 goes out."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        drain_bytes: int | None = None,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = DRAIN_FACTOR * max_bytes if drain_bytes is None else drain_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope["headers"])
        if declared is not None and declared > self.max_bytes:
            if declared > self.drain_bytes or _expects_continue(scope["headers"]):
                # Reading part of it would help no one; a client waiting for "100 Continue"
                # has sent nothing yet (uvicorn sends it on the first receive(), never made here).
                await self._refuse(send, close=True)
            else:
                await self._drain_and_refuse(receive, send, received=0, more_body=True)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(received, message.get("more_body", False))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as refused:
            if not started:
                await self._drain_and_refuse(receive, send, refused.received, refused.more_body)

    async def _drain_and_refuse(self, receive: Receive, send: Send, received: int, more_body: bool) -> None:
        """uvicorn stops reading the socket once 64 KiB wait unread and reads on at the next
        receive(): so each receive() here really takes bytes off the wire."""
        try:
            async with asyncio.timeout(self.drain_seconds):
                while more_body and received <= self.drain_bytes:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # nobody left to answer
                    received += len(message.get("body", b""))
                    more_body = message.get("more_body", False)
        except TimeoutError:
            pass
        await self._refuse(send, close=more_body)

    async def _refuse(self, send: Send, *, close: bool) -> None:
        for message in _too_large(self.max_bytes, close=close):
            await send(message)
