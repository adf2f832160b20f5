"""A GraphQL-over-WebSocket client for tests, speaking graphql-transport-ws and the legacy
graphql-ws, built on the `websockets` library (a real client, not the server's code)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from collections import deque
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]

MESSAGE_CREATED = """
subscription($room: ID!, $after: ID) {
  messageCreated(room: $room, after: $after) { id seq body sender { id name } room { id } }
}"""


ROOM_EVENTS = """
subscription($room: ID!, $after: String) {
  roomEvents(room: $room, after: $after) {
    __typename cursor at room { id }
    ... on MessageCreated { message { id seq body sender { id name } } }
    ... on MemberJoined { user { id name } }
    ... on MemberLeft { user { id name } }
  }
}"""


@dataclass
class Refused:
    """How the server refused a connection_init: what it sent first, then its close."""

    messages: list[dict]
    code: int | None
    reason: str


class GraphQLWebSocket:
    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.pings = 0
        self.held: deque[dict] = deque()  # what arrived while a barrier waited, for `receive`
        self.barriers = 0

    @classmethod
    async def open(cls, url: str, protocol: str, token: str | None = None) -> GraphQLWebSocket:
        """Connected and, given a token, initialised (acknowledged)."""
        client = cls(await connect(url, subprotocols=[protocol], max_size=None), protocol)  # type: ignore[list-item]
        if token is not None:
            ack = await client.init({"authorization": f"Bearer {token}"})
            assert ack["type"] == "connection_ack", ack
        return client

    @classmethod
    async def connect(cls, url: str, protocol: str) -> GraphQLWebSocket:
        """Connected (the handshake done), nothing sent yet."""
        return cls(await connect(url, subprotocols=[protocol], max_size=None), protocol)  # type: ignore[list-item]

    async def acknowledged(self, token: str | None, timeout: float = 5.0) -> GraphQLWebSocket | Refused:
        """connection_init sent with `token` (none: anonymous): this connection once
        acknowledged, or how the server refused it (the messages before its close but
        keepalives, the close's code and reason)."""
        payload = {} if token is None else {"authorization": f"Bearer {token}"}
        await self.send({"type": "connection_init", "payload": payload})
        before = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = json.loads(await self.ws.recv())
                    if message["type"] == "connection_ack":
                        return self
                    if message["type"] == "ping":
                        await self.send({"type": "pong"})
                    elif message["type"] not in ("ka", "pong"):
                        before.append(message)
        except ConnectionClosed as closed:
            return Refused(before, closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else "")

    @property
    def local_port(self) -> int:
        return self.ws.local_address[1]

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def init(self, payload: Any) -> dict:
        await self.send({"type": "connection_init", "payload": payload})
        return await self.receive()

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send({"id": op_id, "type": kind, "payload": {"query": query, "variables": variables or {}}})

    async def stop(self, op_id: str) -> None:
        await self.send({"id": op_id, "type": "complete" if self.protocol == TRANSPORT_WS else "stop"})

    async def receive(self, timeout: float = 5.0) -> dict:
        """The next message that is not a keepalive (pings are answered), within `timeout` in
        all: keepalives arriving more often than that must not extend the wait forever.
        Messages held by a `barrier` come first."""
        if self.held:
            return self.held.popleft()
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] == "ping":
                    self.pings += 1
                    await self.send({"type": "pong"})
                elif message["type"] not in ("ka", "pong"):
                    return message

    async def barrier(self, timeout: float = 5.0) -> None:
        """Returns once the server has handled every message sent before it on this connection:
        a subscription started before it is in place (its Redis subscription confirmed), so
        whatever is published from now on reaches it.

        The server starts a subscription before it reads the connection's next message
        (transports.websocket_session `start`), so any answer to a later message proves it.
        graphql-transport-ws: a `ping`, answered by `pong`. The legacy graphql-ws has no ping
        (`ka` is the server's own timer, no answer to anything): a one-field query
        (`{ __typename }`, under an id of its own) stands in, its `complete` the answer. It
        counts as an operation while it runs, so at MAX_SUBSCRIPTIONS it is refused, which is
        an answer all the same. Whatever else arrives meanwhile is held for `receive`."""
        self.barriers += 1
        if self.protocol == TRANSPORT_WS:
            await self.send({"type": "ping"})
            done: dict[str, Any] = {"type": "pong"}
            own: str | None = None
        else:
            own = f"barrier-{self.barriers}"
            await self.send({"id": own, "type": "start", "payload": {"query": "{ __typename }", "variables": {}}})
            done = {"type": "complete", "id": own}
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                kind = message["type"]
                if message == done:
                    return
                if kind == "ping":
                    self.pings += 1
                    await self.send({"type": "pong"})
                elif kind not in ("ka", "pong") and (own is None or message.get("id") != own):
                    self.held.append(message)

    async def result(self, op_id: str, timeout: float = 5.0) -> dict:
        """The payload of the next result (`next` or `data`) of an operation."""
        message = await self.receive(timeout)
        assert message.get("id") == op_id and message["type"] in ("next", "data"), message
        return message["payload"]

    async def messages(self, op_id: str, count: int, timeout: float = 10.0) -> list[dict]:
        """`count` messageCreated payloads of an operation."""
        found = []
        for _ in range(count):
            payload = await self.result(op_id, timeout)
            assert "errors" not in payload, payload
            found.append(payload["data"]["messageCreated"])
        return found

    async def events(self, op_id: str, count: int, timeout: float = 10.0) -> list[dict]:
        """`count` roomEvents payloads of an operation."""
        found = []
        for _ in range(count):
            payload = await self.result(op_id, timeout)
            assert "errors" not in payload, payload
            found.append(payload["data"]["roomEvents"])
        return found

    async def error(self, op_id: str) -> list[dict]:
        """The errors that refused an operation: an `error` message on graphql-transport-ws; on
        graphql-ws, as its reference server sends them, a result with only errors, then `complete`."""
        message = await self.receive()
        assert message["id"] == op_id, message
        if self.protocol == TRANSPORT_WS:
            assert message["type"] == "error", message
            return message["payload"]
        assert message["type"] == "data" and set(message["payload"]) == {"errors"}, message
        assert await self.receive() == {"type": "complete", "id": op_id}
        return message["payload"]["errors"]

    async def silent(self, seconds: float = 0.8) -> bool:
        """True when nothing but keepalives arrives for `seconds`."""
        try:
            message = await self.receive(timeout=seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected message: {message}")

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; the code it sent."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def close(self) -> None:
        await self.ws.close()


def connection_owners(port: int) -> dict[int, int]:
    """Client port -> PID of the server process holding the other end, for connections to `port`."""
    output = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    owners = {}
    for line in output.splitlines():
        peer = re.search(r"\s127\.0\.0\.1:(\d+)\s+users:\(\(\"[^\"]+\",pid=(\d+)", line)
        if peer:
            owners[int(peer.group(1))] = int(peer.group(2))
    return owners


def worker_pids(server_pid: int) -> list[int]:
    with open(f"/proc/{server_pid}/task/{server_pid}/children") as children:
        return sorted(int(pid) for pid in children.read().split())


async def connect_on_worker(url: str, port: int, server_pid: int, worker: int, protocol: str) -> GraphQLWebSocket:
    """A connection (handshake done, nothing sent) served by `worker`, as `open_on_worker`."""
    others = [pid for pid in worker_pids(server_pid) if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        client = await GraphQLWebSocket.connect(url, protocol)
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)
    assert connection_owners(port).get(client.local_port) == worker
    return client


async def open_on_worker(
    url: str, port: int, server_pid: int, worker: int, protocol: str, token: str
) -> GraphQLWebSocket:
    """A connection served by `worker`: every other worker is paused while it connects (a stopped
    process accepts nothing), then resumed. Verified from the kernel's socket table."""
    others = [pid for pid in worker_pids(server_pid) if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        client = await GraphQLWebSocket.open(url, protocol, token)
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)
    assert connection_owners(port).get(client.local_port) == worker
    return client
