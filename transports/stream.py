"""What the streamed HTTP transports (SSE, Apollo's multipart) share: one operation per response.

The head and a first frame go out at once (a proxy or client waiting for the first byte never
times out), then the operation's results as frames of the transport's kind, heartbeats from one
timer per process, and an end. The stream is the operation's sink on the live engine: the same
shared execution, authorization and gap-free resume as a WebSocket subscription. A stream whose
worker stops, or that cannot be served now, ends without its protocol's end (or with the frame
its protocol gives for that): the client reconnects (an EventSource by itself) and resumes.

Every frame is the protocol's (transports.sse, transports.multipart), handed in as a
`StreamFraming`; nothing here builds one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import OperationType
from starlette.types import Receive, Scope, Send

from execution.operations import Request, is_unavailable
from identity.auth import Viewer
from live.quota import Slot
from serving.uvicorn_protocols import DRAINING, ON_DRAIN, chunk_writer
from telemetry import record
from transports.keepalive import Keepalive
from transports.operations import INTERNAL_ERROR, LiveServer, TryAgainLater, execute_single, start_subscription
from transports.outbox import StreamOutbox

logger = logging.getLogger("chat.live")

# Sent with a 503 that answers a stream's request (multipart's, when the viewer cannot be told).
RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True, slots=True)
class StreamFraming:
    """A streamed protocol's response head and frames, built by its module."""

    headers: tuple[tuple[bytes, bytes], ...]
    preamble: bytes  # the first bytes, sent at once
    heartbeat: bytes
    result: Callable[[bytes, str | None], bytes]  # (result, its event id) -> its frame
    refusal: Callable[[list[dict]], bytes]  # the errors that refused the operation -> a frame
    end: bytes  # the operation ended: the client must not come back
    unavailable: bytes | None  # tells the client to come back (None: ending without `end` says it)
    transport: str  # its chat.transport (telemetry.record)


class Stream:
    """One streamed operation, framed by its protocol's `framing`."""

    __slots__ = ("connection_slot", "framing", "keepalive", "outbox", "presence", "server", "subscription")

    def __init__(self, server: LiveServer, keepalive: Keepalive, framing: StreamFraming) -> None:
        self.server = server
        self.keepalive = keepalive
        self.framing = framing
        self.outbox: StreamOutbox | None = None
        self.subscription: Any = None
        self.presence: str | None = None
        self.connection_slot: Slot | None = None  # one of its user's (live.quota)

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, request: Request, viewer: Viewer | None, context: dict
    ) -> None:
        outbox = await self._open(scope, send)
        opened = record.connection_opened(self.framing.transport)
        if scope.get(DRAINING):  # this worker is stopping: the client comes back to the next one
            outbox.close(0, "")
        else:
            scope[ON_DRAIN] = self.drain
            await self._run(request, viewer, context, scope["headers"])
        try:
            await _until_disconnected(receive)
        finally:
            scope.pop(ON_DRAIN, None)
            self.keepalive.discard(self)
            if self.presence is not None and self.server.presence is not None:
                self.server.presence.disconnected(self.presence)
            if self.subscription is not None:
                self.subscription.close()
            if self.connection_slot is not None:
                self.connection_slot.release()
            await outbox.aclose()
            record.connection_closed(self.framing.transport, opened, outbox.close_reason)

    async def cut(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open and end at once, without the end frame: the client comes back shortly (an
        EventSource gives up for good on an answer other than 200, so an outage is said this way)."""
        outbox = await self._open(scope, send)
        self.try_again_later()
        try:
            await _until_disconnected(receive)
        finally:
            await outbox.aclose()

    async def _open(self, scope: Scope, send: Send) -> StreamOutbox:
        await send({"type": "http.response.start", "status": 200, "headers": list(self.framing.headers)})
        outbox = self.outbox = StreamOutbox(send, chunk_writer(scope), self.server.send_queue)
        outbox.put(self.framing.preamble)
        return outbox

    async def _run(
        self, request: Request, viewer: Viewer | None, context: dict, headers: list[tuple[bytes, bytes]]
    ) -> None:
        outbox, framing = self.outbox, self.framing
        assert outbox is not None
        try:
            if request.kind != OperationType.SUBSCRIPTION:
                result = await execute_single(self.server, request, context, framing.transport, headers)
                outbox.put(framing.result(result, None))
                outbox.finish(framing.end)
                return
            outcome = await start_subscription(self.server, request, context, self, self)
        except TryAgainLater:
            self.try_again_later()
            return
        except Exception as error:
            if is_unavailable(error):
                self.try_again_later()
                return
            logger.exception("A streamed operation failed")
            outbox.put(framing.refusal([INTERNAL_ERROR]))
            outbox.finish(framing.end)
            return
        if outcome is None:  # ended while starting, and told so
            return
        if isinstance(outcome, list):
            outbox.put(framing.refusal(outcome))
            outbox.finish(framing.end)
            return
        self.subscription = outcome
        self.keepalive.add(self, outbox.put, framing.heartbeat)
        if viewer is not None and self.server.presence is not None:
            self.presence = self.server.presence.connected(viewer)

    @property
    def transport(self) -> str:
        return self.framing.transport

    def drain(self) -> None:
        """The worker is stopping: end now, without the end frame, so the client reconnects."""
        if self.outbox is not None:
            self.outbox.close(0, "")

    # The live engine's Sink.
    @property
    def closed(self) -> bool:
        return self.outbox is None or self.outbox.closed

    def send(self, payload: bytes, event_id: str | None) -> None:
        assert self.outbox is not None
        self.outbox.put(self.framing.result(payload, event_id))

    def history(self, results: list[tuple[bytes, str | None]]) -> None:
        assert self.outbox is not None
        result = self.framing.result
        self.outbox.put_history([result(payload, event_id) for payload, event_id in results])

    async def drained(self) -> None:
        if self.outbox is not None:
            await self.outbox.drained()

    def end(self, payload: bytes) -> None:
        assert self.outbox is not None
        self.outbox.put(self.framing.result(payload, None))
        self.outbox.finish(self.framing.end)

    def token_expired(self, payload: bytes) -> None:
        """A stream ends as for any expired token (its client opens a new one with a fresh token)."""
        self.end(payload)

    def try_again_later(self) -> None:
        assert self.outbox is not None
        frame = self.framing.unavailable
        if frame is None:
            self.outbox.close(0, "")
        else:
            self.outbox.put(frame)
            self.outbox.finish(self.framing.end)


async def _until_disconnected(receive: Receive) -> None:
    """Until the response has ended (uvicorn then reports a disconnect) or the client left."""
    while (await receive())["type"] != "http.disconnect":
        pass
