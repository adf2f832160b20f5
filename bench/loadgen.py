"""Load generators: WebSocket subscribers and an HTTP publisher for fan-out, keep-alive HTTP
clients for plain queries. Kept light (uvloop, orjson, raw sockets for HTTP) so that the
server, not the generator, sets the pace; it shares the machine's two cores all the same."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

SUBSCRIPTION = (
    "subscription($room: ID!) { messageCreated(room: $room) { id body createdAt sender { id name avatar(size: 32) } } }"
)
CREATE_MESSAGE = "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }"
ME = "{ me { id name avatar(size: 32) } }"


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (live ones), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / ticks


def tree_rss(pid: int) -> int:
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(child) for child in children.read().split())
        except FileNotFoundError:
            continue
    return total


@dataclass
class Subscriber:
    ws: ClientConnection
    seen: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @classmethod
    async def open(cls, ws_url: str, token: str, room: str) -> Subscriber:
        ws = await connect(ws_url, subprotocols=["graphql-transport-ws"], max_size=None)  # type: ignore[list-item]
        await ws.send(
            orjson.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}).decode()
        )
        await ws.recv()
        payload = {"query": SUBSCRIPTION, "variables": {"room": room}}
        await ws.send(orjson.dumps({"id": "1", "type": "subscribe", "payload": payload}).decode())
        return cls(ws)

    async def listen(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                frame = orjson.loads(await self.ws.recv())
                if frame["type"] == "next":
                    received = time.time()
                    message = frame["payload"]["data"]["messageCreated"]
                    self.seen[message["id"]] = self.seen.get(message["id"], 0) + 1
                    self.latencies.append(received - float(message["body"].split(" ", 1)[0]))
                elif frame["type"] == "ping":
                    await self.ws.send('{"type":"pong"}')
        except (asyncio.CancelledError, Exception):
            return


async def open_subscribers(ws_url: str, tokens: list[str], rooms: list[str], count: int) -> list[Subscriber]:
    subscribers: list[Subscriber] = []
    for start in range(0, count, 100):
        batch = range(start, min(count, start + 100))
        subscribers += await asyncio.gather(
            *(Subscriber.open(ws_url, tokens[i % len(tokens)], rooms[i % len(rooms)]) for i in batch)
        )
    return subscribers


async def publish(base_url: str, token: str, rooms: list[str], count: int, rate: float) -> list[str]:
    """`count` messages at `rate` per second, round-robin over `rooms`; the send time leads the body."""
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        gate = asyncio.Semaphore(16)
        start = time.monotonic()

        async def one(i: int) -> None:
            async with gate:
                body = f"{time.time():.6f} message {i}"
                variables = {"room": rooms[i % len(rooms)], "body": body}
                response = await http.post("/graphql", json={"query": CREATE_MESSAGE, "variables": variables})
                ids.append(response.json()["data"]["createMessage"]["id"])

        tasks = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return ids


@dataclass
class HttpResult:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int


async def http_load(host: str, port: int, token: str, clients: int, seconds: float) -> HttpResult:
    """`clients` keep-alive connections, each sending the `me` query back to back."""
    body = orjson.dumps({"query": ME})
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                payload = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 200") or b'"errors"' in payload:
                    errors += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return HttpResult(len(latencies), time.monotonic() - started, latencies, errors)
