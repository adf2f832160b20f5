"""Load generators: WebSocket, SSE and multipart subscribers and an HTTP publisher for fan-out,
keep-alive HTTP clients for plain queries. Kept light (uvloop, orjson, raw sockets for HTTP and
WebSocket) so that the server, not the generator, sets the pace; it shares the machine's two
cores all the same."""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

import httpx
import orjson

from tests.support.rawws import client_frame, upgrade_request

MESSAGE_FIELDS = "{ id body createdAt sender { id name avatar(size: 32) } }"
SUBSCRIPTIONS = {
    "messageCreated": (
        f"subscription($room: ID!, $after: ID) {{ messageCreated(room: $room, after: $after) {MESSAGE_FIELDS} }}"
    ),
    "roomEvents": (
        "subscription($room: ID!, $after: String) { roomEvents(room: $room, after: $after) "
        f"{{ cursor ... on MessageCreated {{ message {MESSAGE_FIELDS} }} }} }}"
    ),
    # The chat features' mix (bench.chat_features): messages, edits and reactions of one room.
    "roomEventsMix": (
        "subscription($room: ID!, $after: String) { roomEvents(room: $room, after: $after) { cursor "
        f"... on MessageCreated {{ message {MESSAGE_FIELDS} }} "
        "... on MessageEdited { message { id body editedAt } } "
        "... on ReactionChanged { emoji added user { id name } message { id reactions { emoji count mine } } } } }"
    ),
}

CREATE_MESSAGE = "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }"
ME = "{ me { id name avatar(size: 32) } }"
Label = TypeVar("Label")
First = TypeVar("First")
Second = TypeVar("Second")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def children(pid: int) -> list[int]:
    """A process's live children (a gunicorn master's are its workers); none once it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except FileNotFoundError:
        return []


def process_tree(pid: int) -> list[int]:
    """A process and its live descendants."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children(current))
    return tree


def _cpu_ticks(stat_path: str) -> int:
    """utime + stime in clock ticks from a /proc `stat` file (a process's or a thread's); 0 once
    it is gone."""
    try:
        with open(stat_path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (live ones), in seconds."""
    total = sum(_cpu_ticks(f"/proc/{current}/stat") for current in process_tree(pid))
    return total / os.sysconf("SC_CLK_TCK")


def tree_side_threads_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread but each process's main one, across a process and its
    descendants, in seconds: in a worker, the event loop is the main thread, so this is what the
    others took (telemetry's export threads, asyncio.to_thread's pool)."""
    total = 0
    for current in process_tree(pid):
        try:
            threads = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        total += sum(_cpu_ticks(f"/proc/{current}/task/{thread}/stat") for thread in threads if thread != str(current))
    return total / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    """Resident memory of one process in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except FileNotFoundError:
        return 0


def established_on(pid: int, port: int) -> int:
    """How many established TCP connections to local `port` one process holds."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return 0
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                count += local_port == port and fields[3] == "01" and fields[9] in inodes
    return count


def connections_per_worker(master: int, port: int) -> list[int]:
    """Which worker holds how many of the clients' connections: each worker accepts what arrives
    while it waits, so connections opened at once can all land on one."""
    return [established_on(worker, port) for worker in children(master)]


def tree_rss(pid: int) -> int:
    return sum(rss(current) for current in process_tree(pid))


def uss(pid: int) -> int:
    """Unique set size of one process in bytes (its private pages: what ending it would free,
    where RSS also counts the pages a forked worker still shares with its master); 0 once gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return sum(
                int(line.split()[1]) * 1024 for line in rollup if line.startswith(("Private_Clean:", "Private_Dirty:"))
            )
    except (FileNotFoundError, ProcessLookupError):
        return 0


def tree_uss(pid: int) -> int:
    return sum(uss(current) for current in process_tree(pid))


class Subscriber(asyncio.Protocol):
    """A graphql-transport-ws subscriber on a raw socket. The `websockets` library costs tens of
    microseconds a frame in Python; this parser costs a few, so thousands of subscribers in one
    process measure the server rather than themselves.

    Each read is timed as it comes, and results are parsed only when asked for (`seen`,
    `latencies`): the generator reads a thousand sockets one after another, and a parse of each
    on the way would put the thousandth read behind 999 parses, the generator's own queue in
    the server's latency. A subclass that acts on each result as it comes sets `parse_later`
    to False."""

    parse_later = True

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.handshake_done = asyncio.get_running_loop().create_future()
        self.acked = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self._seen: dict[str, int] = {}
        self._latencies: list[float] = []
        # Two lists, not a list of pairs: no object per result for the collector to track.
        self._unparsed: list[bytes] = []
        self._unparsed_at: list[float] = []
        self.results_read = 0  # parsed or not
        self.errors = 0

    @property
    def seen(self) -> dict[str, int]:
        """How many times each result came (by message id, or what a subclass counts by)."""
        self._parse_results()
        return self._seen

    @property
    def latencies(self) -> list[float]:
        """Each result's time from its send time to its read, in seconds."""
        self._parse_results()
        return self._latencies

    def _parse_results(self) -> None:
        if not self._unparsed:
            return
        unparsed, self._unparsed = self._unparsed, []
        received, self._unparsed_at = self._unparsed_at, []
        for payload, at in zip(unparsed, received, strict=True):
            self.on_message(payload, at)

    @classmethod
    async def open(
        cls, ws_url: str, token: str, room: str, after: str | None = None, field: str = "messageCreated"
    ) -> Self:
        """Connected, acknowledged and subscribed to `field` (replaying history after `after`: a
        message id for messageCreated, a cursor for roomEvents); the socket is dropped if any step
        fails, so a failure leaves nothing open."""
        subscriber = await cls.connect(ws_url, token)
        payload = {"query": SUBSCRIPTIONS[field], "variables": {"room": room, "after": after}}
        subscriber.send_text({"id": "1", "type": "subscribe", "payload": payload})
        return subscriber

    @classmethod
    async def connect(cls, ws_url: str, token: str) -> Self:
        """Connected and acknowledged as `token`'s user, nothing subscribed yet; the socket is
        dropped if any step fails, so a failure leaves nothing open."""
        url = httpx.URL(ws_url)
        _, subscriber = await asyncio.get_running_loop().create_connection(cls, url.host, url.port or 80)
        try:
            subscriber.send_raw(upgrade_request(url.host, url.port or 80, url.path, "graphql-transport-ws"))
            await asyncio.wait_for(subscriber.handshake_done, 10)
            subscriber.send_text({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
            await asyncio.wait_for(subscriber.acked, 10)
        except BaseException:
            subscriber.abort()
            raise
        return subscriber

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def send_text(self, message: dict) -> None:
        self.send_raw(client_frame(0x1, orjson.dumps(message)))

    def data_received(self, data: bytes) -> None:
        received = time.time()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self.handshake_done.set_exception(RuntimeError(bytes(self.buffer[:80]).decode()))
                return
            del self.buffer[: end + 4]
            self.upgraded = True
            self.handshake_done.set_result(None)
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < offset + length:
                return
            payload = bytes(buffer[offset : offset + length])
            del buffer[: offset + length]
            if opcode == 0x1:
                if b'"type":"next"' in payload[:48]:
                    self.results_read += 1
                    if self.parse_later:
                        self._unparsed.append(payload)
                        self._unparsed_at.append(received)
                        continue
                self.on_message(payload, received)
            elif opcode == 0x9:
                self.send_raw(client_frame(0xA, payload))
            elif opcode == 0x8:
                self.on_close(struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None)

    def on_message(self, payload: bytes, received: float) -> None:
        """A text frame, read at `received`."""
        frame = orjson.loads(payload)
        kind = frame["type"]
        if kind == "next":
            data = frame["payload"].get("data") or {}
            message = data.get("messageCreated") or (data.get("roomEvents") or {}).get("message")
            if not message:
                self.errors += 1
                return
            self._seen[message["id"]] = self._seen.get(message["id"], 0) + 1
            sent = float(message["body"].split(" ", 1)[0])
            self._latencies.append(received - sent)
            self.on_result(message["id"], sent)
        elif kind == "ping":
            self.send_text({"type": "pong"})
        elif kind == "connection_ack" and not self.acked.done():
            self.acked.set_result(None)

    def on_result(self, message_id: str, sent: float) -> None:
        """A result arrived (for subclasses)."""

    def on_close(self, code: int | None) -> None:
        """The server closed the connection, with this code (None: no close frame); for subclasses."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_close(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():  # the server may have closed it
            self.send_raw(client_frame(0x8, struct.pack("!H", 1000)))
            self.transport.close()

    def abort(self) -> None:
        """Gone without a close frame or a FIN, as a client whose network drops."""
        if self.transport is not None:
            self.transport.abort()


@contextmanager
def collector_paused() -> Iterator[None]:
    """The generator's garbage collector off while results are timed: a full collection of its
    heap (a thousand subscribers' objects) takes tens of milliseconds, during which no socket
    is read, and would show as the server's latency. Collected after."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def until_read(subscribers: Sequence[Subscriber | StreamSubscriber], expected: int, seconds: float = 30) -> None:
    """Until the subscribers have `expected` distinct results, or `seconds` pass: counted
    without parsing while results still come (a parse would hold up the reads it times), then
    by the results parsed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and sum(sub.results_read for sub in subscribers) < expected:
        await asyncio.sleep(0.1)
    while time.monotonic() < deadline and sum(len(sub.seen) for sub in subscribers) < expected:
        await asyncio.sleep(0.1)


async def open_subscribers(
    ws_url: str,
    tokens: list[str],
    rooms: list[str],
    count: int,
    field: str = "messageCreated",
    kind: type[Subscriber] = Subscriber,
) -> list[Subscriber]:
    """`count` subscribers of `kind` to `field`, round-robin over `tokens` and `rooms`, opened 100
    at a time."""
    subscribers: list[Subscriber] = []
    for start in range(0, count, 100):
        batch = range(start, min(count, start + 100))
        subscribers += await asyncio.gather(
            *(kind.open(ws_url, tokens[i % len(tokens)], rooms[i % len(rooms)], None, field) for i in batch)
        )
    return subscribers


class StreamSubscriber(asyncio.Protocol):
    """A subscription over one streamed HTTP/1.1 response on a raw socket: the request written by
    hand, the chunked body decoded in place, results recorded as `Subscriber` records them (`seen`,
    `latencies` from the send time leading each body, `errors`). What a subclass parses out of the
    decoded body (SSE events, multipart parts) goes to `on_payload`; as cheap on the client as the
    raw WebSocket subscriber, so thousands of them measure the server."""

    accept = ""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.raw = bytearray()  # bytes as they came, until the response's head is whole; then chunk framing
        self.body = bytearray()  # the decoded body, not parsed yet
        self.head: bytes = b""
        self.head_received = loop.create_future()
        self.chunked = False
        self.chunk_left = -1  # bytes of the current chunk still to come; -1: a size line is next, -2: a CRLF
        self.seen: dict[str, int] = {}
        self.latencies: list[float] = []
        self.errors = 0
        self.completed = False  # the server ended the operation (`complete`, the closing delimiter)
        self.ended = False  # the response ended (the last chunk, or the connection)

    @classmethod
    async def open(
        cls,
        url: str,
        token: str,
        room: str,
        after: str | None = None,
        field: str = "messageCreated",
        method: str = "POST",
    ) -> Self:
        """Connected, the subscription to `field` sent and the response's head read (a 200 of the
        expected type); `url` may be the WebSocket URL of the same endpoint. The socket is dropped
        if any step fails."""
        parsed = httpx.URL(url)
        host, port = parsed.host, parsed.port or 80
        _, subscriber = await asyncio.get_running_loop().create_connection(cls, host, port)
        try:
            subscriber.send_raw(subscriber.request(host, port, parsed.path, token, room, after, field, method))
            head = await asyncio.wait_for(subscriber.head_received, 10)
            status, _, headers = head.partition(b"\r\n")
            content_type = cls.accept.split(";", 1)[0].split(",", 1)[0].encode()
            if not status.startswith(b"HTTP/1.1 200") or content_type not in headers.lower():
                raise RuntimeError(f"{cls.__name__}: {head.decode(errors='replace')}")
        except BaseException:
            subscriber.abort()
            raise
        return subscriber

    def request(
        self, host: str, port: int, path: str, token: str, room: str, after: str | None, field: str, method: str
    ) -> bytes:
        variables = {"room": room, "after": after}
        head = f"Host: {host}:{port}\r\nAccept: {self.accept}\r\nAuthorization: Bearer {token}\r\n"
        if method == "GET":
            query = httpx.QueryParams({"query": SUBSCRIPTIONS[field], "variables": orjson.dumps(variables).decode()})
            return f"GET {path}?{query} HTTP/1.1\r\n{head}\r\n".encode()
        body = orjson.dumps({"query": SUBSCRIPTIONS[field], "variables": variables})
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        raw = self.raw
        raw += data
        if not self.head:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = bytes(raw[: end + 4])
            del raw[: end + 4]
            self.chunked = b"\r\ntransfer-encoding: chunked\r\n" in self.head.lower()
            if not self.head_received.done():
                self.head_received.set_result(self.head)
        if self.ended:  # what follows the last chunk (its trailers, the final CRLF) means nothing here
            raw.clear()
            return
        if not self.chunked:  # the body runs to the end of the connection
            self.body += raw
            raw.clear()
        else:
            while raw:
                if self.chunk_left > 0:
                    taken = min(self.chunk_left, len(raw))
                    self.body += raw[:taken]
                    del raw[:taken]
                    self.chunk_left -= taken
                    if self.chunk_left == 0:
                        self.chunk_left = -2
                elif self.chunk_left == -2:
                    if len(raw) < 2:
                        break
                    del raw[:2]
                    self.chunk_left = -1
                else:
                    line = raw.find(b"\r\n")
                    if line < 0:
                        break
                    size = int(bytes(raw[:line]).split(b";", 1)[0], 16)
                    del raw[: line + 2]
                    if size == 0:  # the last chunk (no trailers here): the response is over
                        self.parse(time.time())
                        self.end()
                        return
                    self.chunk_left = size
        self.parse(time.time())

    @property
    def results_read(self) -> int:
        return sum(self.seen.values())

    def parse(self, received: float) -> None:
        """Take whole events or parts off the front of `self.body` (for subclasses)."""
        raise NotImplementedError

    def on_payload(self, result: dict, received: float) -> None:
        """One GraphQL execution result."""
        data = result.get("data") or {}
        message = data.get("messageCreated") or (data.get("roomEvents") or {}).get("message")
        if not message or result.get("errors"):
            self.errors += 1
            return
        self.seen[message["id"]] = self.seen.get(message["id"], 0) + 1
        sent = float(message["body"].split(" ", 1)[0])
        self.latencies.append(received - sent)
        self.on_result(message["id"], sent)

    def on_result(self, message_id: str, sent: float) -> None:
        """A result arrived (for subclasses)."""

    def on_complete(self) -> None:
        self.completed = True

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.on_close(None)

    def on_close(self, code: int | None) -> None:
        """The response ended (code always None: HTTP has none); for subclasses."""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head_received.done():
            self.head_received.set_exception(ConnectionResetError("connection closed before the response's head"))
        self.end()

    def close(self) -> None:
        """Gone as a client that stops listening: the connection closed (a FIN)."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Gone without a FIN, as a client whose network drops."""
        if self.transport is not None:
            self.transport.abort()


class SseSubscriber(StreamSubscriber):
    """GraphQL over server-sent events (graphql-sse's distinct connections mode): `next` events
    carry execution results, `complete` ends the operation, comments are heartbeats."""

    accept = "text/event-stream"

    def parse(self, received: float) -> None:
        body = self.body
        if b"\r" in body:  # SSE allows CRLF and CR line ends: one form to split on
            body[:] = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        while (end := body.find(b"\n\n")) >= 0:
            event = bytes(body[:end])
            del body[: end + 2]
            if event.startswith(b":") and b"\n" not in event:  # a heartbeat
                continue
            kind, data = b"message", []
            for line in event.split(b"\n"):
                name, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if name == b"event":
                    kind = value
                elif name == b"data":
                    data.append(value)
            if kind == b"next":
                self.on_payload(orjson.loads(b"\n".join(data)), received)
            elif kind == b"complete":
                self.on_complete()
            elif data:  # an event this client does not know
                self.errors += 1


MULTIPART_DELIMITER = b"\r\n--graphql"


class MultipartSubscriber(StreamSubscriber):
    """Apollo's multipart HTTP subscriptions: each part's JSON is a heartbeat (`{}`), a result
    (`{"payload": ...}`) or a transport error (`{"payload": null, "errors": [...]}`). A part is
    taken once the delimiter after it arrives, as Apollo Client takes it (RFC 2046: the delimiter
    ends a part): a server must write the delimiter right after each part, not before the next."""

    accept = 'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json'

    def __init__(self) -> None:
        super().__init__()
        self.delimited = False  # the first delimiter has passed (what came before it is the preamble)

    def parse(self, received: float) -> None:
        body = self.body
        while not self.completed:
            if self.delimited and body[:2] == b"--":  # the closing delimiter
                self.on_complete()
                return
            end = body.find(MULTIPART_DELIMITER)
            if end < 0:
                return
            part = bytes(body[:end])
            del body[: end + len(MULTIPART_DELIMITER)]
            if self.delimited:
                self.on_part(part, received)
            self.delimited = True

    def on_part(self, part: bytes, received: float) -> None:
        split = part.find(b"\r\n\r\n")
        content = part[split + 4 :].strip() if split >= 0 else b""
        if not content:
            return
        result = orjson.loads(content)
        if "payload" not in result:
            if result:  # anything but a heartbeat
                self.errors += 1
            return
        if result["payload"] is None:  # a transport-level error: the server ends the stream
            self.errors += 1
            return
        self.on_payload(result["payload"], received)


TRANSPORTS: dict[str, type[Subscriber] | type[StreamSubscriber]] = {
    "websocket": Subscriber,
    "sse": SseSubscriber,
    "multipart": MultipartSubscriber,
}


async def open_stream_subscribers(
    transport: str,
    url: str,
    tokens: list[str],
    rooms: list[str],
    count: int,
    field: str = "messageCreated",
    method: str = "POST",
) -> list[Subscriber | StreamSubscriber]:
    """`count` subscribers over `transport` ("websocket", "sse" or "multipart"), round-robin over
    `tokens` and `rooms`, 100 at a time; `url` the endpoint's, ws:// or http://; `method` the HTTP
    streams' (SSE also takes GET, as EventSource sends it)."""
    cls = TRANSPORTS[transport]

    def one(i: int) -> Awaitable[Subscriber | StreamSubscriber]:
        token, room = tokens[i % len(tokens)], rooms[i % len(rooms)]
        if issubclass(cls, StreamSubscriber):
            return cls.open(url, token, room, None, field, method)
        return cls.open(str(httpx.URL(url).copy_with(scheme="ws")), token, room, None, field)

    subscribers: list[Subscriber | StreamSubscriber] = []
    for start in range(0, count, 100):
        subscribers += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 100))))
    return subscribers


async def publish(base_url: str, token: str, rooms: list[str], count: int, rate: float) -> set[int]:
    """`count` messages at `rate` per second, round-robin over `rooms`; the send time leads the
    body. The indexes of the messages the server acknowledged."""
    acknowledged: set[int] = set()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with gate:
                body = f"{time.time():.6f} message {i}"
                variables = {"room": rooms[i % len(rooms)], "body": body}
                try:
                    response = await http.post("/graphql", json={"query": CREATE_MESSAGE, "variables": variables})
                    if (response.json().get("data") or {}).get("createMessage"):
                        acknowledged.add(i)
                except (httpx.HTTPError, ValueError):  # a refusal, or a body that is not JSON (a 500)
                    pass

        await paced(count, rate, one)
    return acknowledged


async def paced(count: int, rate: float, one: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """`one(0)` ... `one(count - 1)`, the i-th started `i / rate` seconds after the first
    whether or not the ones before have finished (an open-loop load: a slow server does not
    slow the sender); until all have finished."""
    start = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


@dataclass
class HttpResult:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int


def post_request(host: str, port: int, body: bytes, token: str | None = None, chunked: bool = False) -> bytes:
    """A raw `POST /graphql`, its body declared by Content-Length or sent as one chunk."""
    head = f"POST /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    if chunked:
        return f"{head}Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def keep_alive(
    host: str,
    port: int,
    requests: Iterator[tuple[Label, bytes]],
    answered: Callable[[Label, bytes, bytes, float], None],
    failed: Callable[[Label, Exception], None] | None = None,
) -> None:
    """One client sending `requests` back to back on a kept-alive connection, each as soon as the
    last is answered: `answered(label, head, payload, seconds)`. A connection the server closes
    (`connection: close`) is replaced; a request whose connection fails (refused, reset, closed
    before a whole answer) goes to `failed`, or raises without it. Several clients may share one
    iterator: each takes the next request."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        for label, request in requests:
            try:
                if reader is None or writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                payload = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, IndexError) as error:  # IndexError: no length
                if failed is None:
                    raise
                failed(label, error)
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            answered(label, head, payload, time.perf_counter() - started)
            if b"\r\nconnection: close\r\n" in head:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


RAMP_SECONDS = 0.005


async def http_load(
    host: str, port: int, token: str, clients: int, seconds: float, query: str = ME, ramp: float = RAMP_SECONDS
) -> HttpResult:
    """`clients` keep-alive connections, each sending `query` (the `me` query) back to back,
    opened `ramp` seconds apart, as a router's pool of connections grows with its load. Opened
    all at once on an idle server, they land on whichever worker wakes first, often every one of
    them (see `connections_per_worker`): the figure would then be one worker's, by chance."""
    request = post_request(host, port, orjson.dumps({"query": query}), token)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    def until_deadline() -> Iterator[tuple[None, bytes]]:
        while time.monotonic() < deadline:
            yield None, request

    def answered(_label: None, head: bytes, payload: bytes, seconds: float) -> None:
        nonlocal errors
        latencies.append(seconds)
        if not head.startswith(b"HTTP/1.1 200") or b'"errors"' in payload:
            errors += 1

    async def client(number: int) -> None:
        await asyncio.sleep(number * ramp)
        await keep_alive(host, port, until_deadline(), answered)

    started = time.monotonic()
    await asyncio.gather(*(client(number) for number in range(clients)))
    return HttpResult(len(latencies), time.monotonic() - started, latencies, errors)


@dataclass
class TurnedRounds:
    """What `turned_rounds` measured, by query name."""

    requests: dict[str, int]
    seconds: dict[str, float]
    latencies: dict[str, list[float]]
    splits: dict[str, list[str]]  # the clients' connections per worker, one "a/b" a round
    errors: int = 0

    def per_second(self, name: str) -> float:
        return self.requests[name] / self.seconds[name]

    def splits_by_round(self) -> dict[str, str]:
        """How each query's clients fell on the workers, round by round: a figure for `show`."""
        return {
            f"clients' connections per worker, by round: {name}": " ".join(split) for name, split in self.splits.items()
        }


async def turned_rounds(
    master: int,
    base_url: str,
    token: str,
    queries: Mapping[str, str],
    seconds: float,
    rounds: int = 2,
    clients: int = 50,
) -> TurnedRounds:
    """Each of `queries` as `token`'s user from `clients` keep-alive clients (`http_load`): after a
    warm-up of each, `seconds` in all, split into `rounds` whose order turns (A B C, C B A: what
    the previous part left running, a passing autovacuum, or a machine slowing over the run falls
    on each alike). A second into each round (half of it, when shorter), how its clients'
    connections fell on the workers of the server whose master process is `master`."""
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    for query in queries.values():
        await http_load(host, port, token, clients, 2.0, query)
    result = TurnedRounds(
        dict.fromkeys(queries, 0),
        dict.fromkeys(queries, 0.0),
        {name: [] for name in queries},
        {name: [] for name in queries},
    )
    for number in range(rounds):
        for name, query in list(queries.items())[:: 1 if number % 2 == 0 else -1]:
            load = asyncio.ensure_future(http_load(host, port, token, clients, seconds / rounds, query))
            await asyncio.sleep(min(1.0, seconds / rounds / 2))
            result.splits[name].append("/".join(map(str, connections_per_worker(master, port))))
            done = await load
            result.requests[name] += done.requests
            result.seconds[name] += done.seconds
            result.latencies[name] += done.latencies
            result.errors += done.errors
    return result


# Reports: two loads side by side, measured in the same run.


def row(label: str, first: float, second: float) -> None:
    """A line of a side-by-side table: the two figures and the second's ratio to the first."""
    ratio = f"{second / first:.2f}x" if first else ""
    print(f"  {label:34} {first:15.1f} {second:15.1f} {ratio:>13}")


def show(title: str, figures: Mapping[str, float | str]) -> None:
    print(f"\n{title}")
    for name, value in figures.items():
        if isinstance(value, float):
            print(f"  {name:52} {value:12.2f}" if abs(value) < 10 else f"  {name:52} {value:12.1f}")
        else:
            print(f"  {name:52} {value:12}")


async def alternating(
    pairs: int, first: Callable[[], Awaitable[First]], second: Callable[[], Awaitable[Second]]
) -> list[tuple[First, Second]]:
    """`pairs` pairs of rounds, `first` then `second` in the even ones and the other way round in
    the odd ones (A B, B A, ...: a machine that slows or speeds up over the run weighs on both
    sides alike, where A B, A B would put every B later than its A). Each pair as (first's,
    second's) whatever its order."""
    rounds: list[tuple[First, Second]] = []
    for pair in range(pairs):
        if pair % 2 == 0:
            a = await first()
            b = await second()
        else:
            b = await second()
            a = await first()
        rounds.append((a, b))
    return rounds


class Round(Protocol):
    """What `pooled` reads of a fan-out round (bench.run.FanOut)."""

    latencies: list[float]
    cpu_us_per_delivery: float


def pooled(rounds: Sequence[tuple[Round, Round]], ratio: str, figures: Sequence[tuple[str, str]]) -> None:
    """The tail of a side-by-side table of paired rounds (`alternating`): latency over all
    rounds pooled (a p99 over one round is set by its few slowest deliveries; over all rounds,
    by more), mean CPU per delivery, and the median of the pairs' ratios (`ratio` names it) of
    each of `figures` (label, attribute)."""
    both = (
        [latency for first, _ in rounds for latency in first.latencies],
        [latency for _, second in rounds for latency in second.latencies],
    )
    print(f"  all {len(rounds) * 2} rounds, {sum(map(len, both)):,} deliveries")
    row("latency p50 (ms)", *(percentile(side, 0.5) * 1000 for side in both))
    row("latency p99 (ms)", *(percentile(side, 0.99) * 1000 for side in both))
    row(
        "mean CPU per delivery (us)",
        sum(first.cpu_us_per_delivery for first, _ in rounds) / len(rounds),
        sum(second.cpu_us_per_delivery for _, second in rounds) / len(rounds),
    )
    print(f"  median of the pairs' ratios ({ratio})")
    for label, figure in figures:
        ratios = [getattr(second, figure) / getattr(first, figure) for first, second in rounds]
        print(f"  {label:34} {'':31} {statistics.median(ratios):12.2f}x")
