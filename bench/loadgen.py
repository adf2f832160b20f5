"""Load generators: WebSocket subscribers and an HTTP publisher for fan-out, keep-alive HTTP
clients for plain queries. Kept light (uvloop, orjson, raw sockets for HTTP) so that the
server, not the generator, sets the pace; it shares the machine's two cores all the same."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Self, TypeVar

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


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (live ones), in seconds."""
    total = 0
    for current in process_tree(pid):
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    """Resident memory of one process in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except FileNotFoundError:
        return 0


def tree_rss(pid: int) -> int:
    return sum(rss(current) for current in process_tree(pid))


class Subscriber(asyncio.Protocol):
    """A graphql-transport-ws subscriber on a raw socket. The `websockets` library costs tens of
    microseconds a frame in Python; this parser costs a few, so thousands of subscribers in one
    process measure the server rather than themselves."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.handshake_done = asyncio.get_running_loop().create_future()
        self.acked = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.seen: dict[str, int] = {}
        self.latencies: list[float] = []
        self.errors = 0

    @classmethod
    async def open(
        cls, ws_url: str, token: str, room: str, after: str | None = None, field: str = "messageCreated"
    ) -> Self:
        """Connected, acknowledged and subscribed to `field` (replaying history after `after`: a
        message id for messageCreated, a cursor for roomEvents); the socket is dropped if any step
        fails, so a failure leaves nothing open."""
        url = httpx.URL(ws_url)
        _, subscriber = await asyncio.get_running_loop().create_connection(cls, url.host, url.port)
        try:
            subscriber.send_raw(upgrade_request(url.host, url.port or 80, url.path, "graphql-transport-ws"))
            await asyncio.wait_for(subscriber.handshake_done, 10)
            subscriber.send_text({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
            await asyncio.wait_for(subscriber.acked, 10)
        except BaseException:
            subscriber.abort()
            raise
        payload = {"query": SUBSCRIPTIONS[field], "variables": {"room": room, "after": after}}
        subscriber.send_text({"id": "1", "type": "subscribe", "payload": payload})
        return subscriber

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def send_text(self, message: dict) -> None:
        self.send_raw(client_frame(0x1, orjson.dumps(message)))

    def data_received(self, data: bytes) -> None:
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
                self.on_message(payload)
            elif opcode == 0x9:
                self.send_raw(client_frame(0xA, payload))
            elif opcode == 0x8:
                self.on_close(struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None)

    def on_message(self, payload: bytes) -> None:
        frame = orjson.loads(payload)
        kind = frame["type"]
        if kind == "next":
            received = time.time()
            data = frame["payload"].get("data") or {}
            message = data.get("messageCreated") or (data.get("roomEvents") or {}).get("message")
            if not message:
                self.errors += 1
                return
            self.seen[message["id"]] = self.seen.get(message["id"], 0) + 1
            sent = float(message["body"].split(" ", 1)[0])
            self.latencies.append(received - sent)
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
        if self.transport is not None:
            self.send_raw(client_frame(0x8, struct.pack("!H", 1000)))
            self.transport.close()

    def abort(self) -> None:
        """Gone without a close frame or a FIN, as a client whose network drops."""
        if self.transport is not None:
            self.transport.abort()


async def open_subscribers(
    ws_url: str, tokens: list[str], rooms: list[str], count: int, field: str = "messageCreated"
) -> list[Subscriber]:
    subscribers: list[Subscriber] = []
    for start in range(0, count, 100):
        batch = range(start, min(count, start + 100))
        subscribers += await asyncio.gather(
            *(Subscriber.open(ws_url, tokens[i % len(tokens)], rooms[i % len(rooms)], None, field) for i in batch)
        )
    return subscribers


async def publish(base_url: str, token: str, rooms: list[str], count: int, rate: float) -> set[int]:
    """`count` messages at `rate` per second, round-robin over `rooms`; the send time leads the
    body. The indexes of the messages the server acknowledged."""
    acknowledged: set[int] = set()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        gate = asyncio.Semaphore(16)
        start = time.monotonic()

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

        tasks = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return acknowledged


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


async def http_load(host: str, port: int, token: str, clients: int, seconds: float, query: str = ME) -> HttpResult:
    """`clients` keep-alive connections, each sending `query` (the `me` query) back to back."""
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

    started = time.monotonic()
    await asyncio.gather(*(keep_alive(host, port, until_deadline(), answered) for _ in range(clients)))
    return HttpResult(len(latencies), time.monotonic() - started, latencies, errors)
