"""uvicorn's server and protocols as this service needs them: the one module that reaches into
uvicorn's internals, written against uvicorn 0.54.0 (pinned in requirements.txt);
tests/test_library_reaches.py fails loudly when uvicorn changes under it.

HTTP: a stopping worker answers every request it was sent (DrainingHttpProtocol, DrainingServer),
and a response the app marks NOT_COUNTED (health checks, refusals) does not count towards
MAX_REQUESTS (uvicorn counts every response in `on_response_complete`).

WebSocket: uvicorn's protocol, keeping less for each idle connection (it lets go of the
handshake's parsed request and response, swaps an `asyncio.Queue` and an `asyncio.Event` that only
ever have one waiter for slot-based equivalents, and pings from one timer per process instead of two
timer handles per connection), and taking whole text frames from the live engine (`write`): a
result fanned out to a thousand sockets is written to each transport as it is, where uvicorn's
`send` would await, re-encode the text and let websockets frame it again for every socket.

Streamed HTTP responses (SSE, multipart): the same direct writes, as chunks (`ChunkWriter`); a
stopping worker tells each started stream (`ON_DRAIN` in its scope) so it ends and its client
reconnects elsewhere, and marks requests still on their way in or arriving while it drains (`DRAINING`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections import deque
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import Server

from core.reaches import written_against

WRITTEN_AGAINST = written_against("uvicorn")
logger = logging.getLogger("uvicorn.error")
RESTARTING = b"Restarting, retry"
# Keys of an HTTP request's scope: a callable the app sets for a response that lasts (a stream),
# called when the worker starts to drain; and True when the request arrived while it drained.
ON_DRAIN = "chat.on_drain"
DRAINING = "chat.draining"
# True in an HTTP request's scope when its response must not count towards MAX_REQUESTS (a health
# check, a refusal): set by the app before its response completes. Anyone can send those, cheaply,
# as fast as they like; recycling is for what ordinary traffic leaves behind.
NOT_COUNTED = "chat.not_counted"
# The `send` the server gave the app, kept in the scope by the app before middleware wrap it:
# what `chunk_writer` looks behind.
SERVER_SEND = "chat.server_send"
# The most bytes a request's line and headers may take before they are complete. httptools
# buffers a header of any length until it ends, so without this a client could make the process
# hold (and the app hash and parse) an `Authorization` header of tens of megabytes.
MAX_REQUEST_HEAD_BYTES = 64 * 1024
HEAD_TOO_LARGE = b"Request line and headers too large"


class Pipeline(list):
    """What the protocol uses of its pipeline `deque` (appendleft, pop, truth, [0]): an empty
    list is 56 bytes where an empty deque is about 600, kept by every open connection."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class DrainingHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, stopping the way a client that keeps connections alive expects.

    uvicorn's own `shutdown` closes at once every connection that is between requests, so a
    request already on its way over a kept-alive connection (Heroku's Router 2.0 reuses them) is
    lost. Draining instead: each connection's next response says `Connection: close` and the
    connection closes after it; a connection nobody uses closes once it has been idle for the
    keep-alive timeout, as it would have anyway, so stopping adds no race that serving doesn't.
    """

    # Our own state is in slots, not in the instance's `__dict__`: uvicorn's protocol sets 28
    # attributes, and CPython 3.11 shares an instance dict's keys with its class (each instance
    # then keeps only its values) for no more than 29 keys. A connection that sets one more gets
    # a whole dict of its own, several times the size, for as long as it is open (every idle
    # stream). tests/test_library_reaches.py checks the dict stays shared.
    __slots__ = ("draining", "head_bytes", "in_head", "opened_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.draining = False
        self.opened_at = 0.0
        # Whether a request's head has begun and is not complete yet, and the bytes received
        # since it began (counted by whole reads: a read that also ends the previous request
        # counts whole).
        self.in_head = False
        self.head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.opened_at = self.loop.time()
        self.pipeline = Pipeline()  # type: ignore[assignment]
        writable = LeanEvent()
        writable.set()
        self.flow._is_writable_event = writable  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """uvicorn's, refusing a request whose head is still incomplete past
        MAX_REQUEST_HEAD_BYTES with 431 (and closing the connection): the parser's buffer for a
        header never grows past it plus one read."""
        was_in_head = self.in_head
        super().data_received(data)
        if self.in_head:
            self.head_bytes = (self.head_bytes if was_in_head else 0) + len(data)
            if self.head_bytes > MAX_REQUEST_HEAD_BYTES and not self.transport.is_closing():
                self.in_head = False
                self.refuse(431, HEAD_TOO_LARGE)

    def refuse(self, status: int, text: bytes, *headers: bytes) -> None:
        """A plain-text answer and the connection closed, for a request the app never sees:
        uvicorn's default headers (server, date) first, then `headers` (each a whole header line,
        its CRLF included)."""
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(text),
                *headers,
                b"connection: close\r\n\r\n",
                text,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True

    def shutdown(self) -> None:
        self.draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
            # Also a request still on its way to being a stream (its body, its viewer): the app
            # reads this before it starts one, and ends at once instead of for the client's life.
            scope[DRAINING] = True
            on_drain = scope.get(ON_DRAIN)
            if on_drain is not None:
                cycle.keep_alive = False  # the client's reconnection goes to another worker
                on_drain()
        if self.pipeline:
            # The last request already read closes the connection: later ones were never sent.
            self.pipeline[0][0].keep_alive = False
        elif cycle is not None and not cycle.response_complete:
            if not cycle.response_started:
                cycle.keep_alive = False
            # Otherwise its headers already promised keep-alive: the connection drains after it.
        elif cycle is None and self.scope is None:
            # Not a byte of a request yet: idle since it was opened, and no keep-alive timer runs.
            self.timeout_keep_alive_task = self.loop.call_at(
                self.opened_at + self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        # Idle after a response: its keep-alive timer is already running. Partway through a
        # request: that request's response will close the connection.

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # a new request (not an upgrade)
            cycle.message_event = LeanEvent()  # type: ignore[assignment]  # a stream waits on it for life
            cycle.on_response = partial(self.response_complete, cycle.scope)
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False
            self.cycle.scope[DRAINING] = True  # type: ignore[literal-required]

    def response_complete(self, scope: Any) -> None:
        """uvicorn's `on_response_complete` (it counts the response), taking back the count of
        a response the app marked NOT_COUNTED."""
        self.on_response_complete()
        if scope.get(NOT_COUNTED):
            self.server_state.total_requests -= 1

    def handle_websocket_upgrade(self) -> None:
        """A WebSocket opened while draining would only be closed with 1012 at once."""
        if not self.draining:
            super().handle_websocket_upgrade()
            return
        self.refuse(503, RESTARTING, b"retry-after: 1\r\n")


def take_backlog(listener: socket.socket) -> list[socket.socket]:
    """Connections the kernel has completed but nobody accepted yet: when the last process closes
    the listening socket they are reset, after their client may have written its request."""
    listener.setblocking(False)
    accepted = []
    try:
        while True:
            try:
                connection, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            accepted.append(connection)
    finally:
        listener.close()
    return accepted


class DrainingServer(Server):
    """uvicorn's server, stopping with DrainingHttpProtocol's connections: it also takes in what
    waits in the listening socket's backlog, to drain it like any other connection."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        listeners = [sock.dup() for sock in sockets or []]
        for server in self.servers:
            server.close()  # uvloop closes the listening sockets it was given
        backlog = [connection for listener in listeners for connection in take_backlog(listener)]
        loop = asyncio.get_running_loop()
        for connection in backlog:
            await loop.connect_accepted_socket(self.create_protocol, connection)
        logger.info("Draining %d connections (%d from the backlog)", len(self.server_state.connections), len(backlog))
        await super().shutdown(sockets)

    def create_protocol(self) -> asyncio.Protocol:
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


class ReceiveQueue:
    """What the protocol uses of `asyncio.Queue` (put_nowait, get, empty) for its one reader:
    the deque exists only while messages wait, the future only while the reader does."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        assert self._items is not None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


class LeanEvent:
    """What the protocols use of `asyncio.Event` (set, clear, wait, is_set): waiters are kept
    only while someone waits (asyncio's keeps an empty deque, about 600 bytes, for life)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


class PingWheel:
    """WebSocket pings for every open connection of the process from one timer: uvicorn arms
    two timer handles per connection (next ping, pong deadline), about 650 bytes each idle one.
    Same rule as uvicorn's with ping_timeout equal to the interval: a ping still unanswered at
    the next turn closes the connection (1011)."""

    def __init__(self) -> None:
        self._members: set[LeanWebSocketProtocol] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, protocol: LeanWebSocketProtocol, interval: float) -> None:
        self._members.add(protocol)
        if self._timer is None:
            self._timer = protocol.loop.call_later(interval, self._turn, protocol.loop, interval)

    def discard(self, protocol: LeanWebSocketProtocol) -> None:
        self._members.discard(protocol)

    def _turn(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._timer = None
        for protocol in list(self._members):
            protocol.ping_or_give_up()
        if self._members:
            self._timer = loop.call_later(interval, self._turn, loop, interval)


pings = PingWheel()


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    frames_written = 0  # by `write`, in this process (shown by /healthz)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        writable = LeanEvent()
        writable.set()
        self.writable = writable  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            pings.add(self, self.ping_interval)

    def stop_keepalive(self) -> None:
        pings.discard(self)
        super().stop_keepalive()

    def ping_or_give_up(self) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        if self.pending_ping_payload is not None:
            self.keepalive_timeout()
            return
        # uvicorn's send_keepalive_ping, without arming a pong timer.
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and self.request is not None:
            # Read only while accepting or refusing: the open connection never looks at them again.
            # websockets' parser keeps the request in its frame for the connection's life, so its
            # headers are emptied in place rather than only let go of.
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]

    def write(self, frame: bytes) -> bool:
        """Write one text message (UTF-8 `frame`) as a single frame now; False when the
        connection is closing or the transport's buffer is over its high-water mark (then wait
        on `wait_writable`). Server frames are unmasked and never fragmented here."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        length = len(frame)
        if length < 126:
            header = bytes((0x81, length))
        elif length < 65536:
            header = struct.pack("!BBH", 0x81, 126, length)
        else:
            header = struct.pack("!BBQ", 0x81, 127, length)
        self.transport.write(header + frame)
        LeanWebSocketProtocol.frames_written += 1
        return True

    @property
    def open(self) -> bool:
        return not (self.close_sent or self.disconnected)

    async def wait_writable(self) -> None:
        await self.writable.wait()


def frame_writer(send: Any) -> LeanWebSocketProtocol | None:
    """The protocol behind an ASGI `send` callable (uvicorn passes its bound method), when it is
    ours; None otherwise (another server, or uvicorn changed): frames then go through `send`."""
    protocol = getattr(send, "__self__", None)
    return protocol if isinstance(protocol, LeanWebSocketProtocol) else None


class ChunkWriter:
    """Writes a streamed HTTP response's chunks straight to its transport, as `write` does for a
    WebSocket: uvicorn's `send` awaits for every chunk. The response's start and end still go
    through `send`, so uvicorn's own state stays right."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle

    def write(self, data: bytes) -> bool:
        """False when the connection is gone or the transport's buffer is full (then wait on
        `wait_writable`)."""
        cycle = self._cycle
        if not self.open or cycle.flow.write_paused or not cycle.chunked_encoding:
            return False
        if data:  # an empty chunk would end the response
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True

    @property
    def open(self) -> bool:
        cycle = self._cycle
        return not (cycle.disconnected or cycle.response_complete or cycle.transport.is_closing())

    async def wait_writable(self) -> None:
        await self._cycle.flow.drain()


def chunk_writer(scope: Any) -> ChunkWriter | None:
    """The direct writer behind the HTTP `send` uvicorn's httptools protocol gave the app (kept in
    the scope under SERVER_SEND); None otherwise (chunks then go through the app's `send`)."""
    cycle = getattr(scope.get(SERVER_SEND), "__self__", None)
    return ChunkWriter(cycle) if isinstance(cycle, RequestResponseCycle) else None
