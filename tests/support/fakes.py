"""In-memory fakes for driving the wire protocols in-process: an ASGI WebSocket client and an
HTTP one (queues on both sides), a live engine that hands the test each subscription's sink,
a connection quota, and a `LiveServer` on a two-field schema. No server, database or Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from graphql import GraphQLError, build_schema

from execution.operations import Operations
from identity.auth import Viewer
from live.source import LiveSource
from transports.keepalive import Keepalive
from transports.operations import LiveServer

SDL = """
type Query { hello: String }
type Subscription { ticks: String }
"""
TICKS = "subscription { ticks }"
HELLO = "{ hello }"
TOKENS = {"alice-token": 1, "bob-token": 2}
UNAVAILABLE = "unavailable-token"  # authenticating it fails as an unreachable database does


def viewer_of(user: int) -> Viewer:
    return Viewer(user={"id": user}, token_hash=f"hash-{user}")


def schema() -> Any:
    built = build_schema(SDL)
    built.query_type.fields["hello"].resolve = lambda _root, _info: "world"  # type: ignore[union-attr]
    ticks = built.subscription_type.fields["ticks"]  # type: ignore[union-attr]

    async def no_refusal() -> GraphQLError | None:
        return None

    def subscribe(_root: Any, info: Any) -> LiveSource:
        viewer = info.context["viewer"]
        if viewer is None:
            raise GraphQLError("A valid token is required.", extensions={"code": "UNAUTHENTICATED"})
        return LiveSource(topic="ticks", viewer=viewer, check=no_refusal)

    ticks.subscribe = subscribe
    ticks.resolve = lambda event, _info: event
    return built


class FakeSubscription:
    def __init__(self, source: LiveSource, sink: Any) -> None:
        self.source = source
        self.sink = sink
        self.closed = False
        self.slot: Any = None
        self.transport: str | None = None  # what it is counted under (telemetry)

    def hold(self, slot: Any) -> None:
        self.slot = slot

    def count(self, transport: str) -> None:
        self.transport = transport

    def close(self) -> None:
        self.closed = True
        if self.slot is not None:
            self.slot.release()
            self.slot = None


class FakeEngine:
    """Subscribes at once; the test delivers through `subscriptions[i].sink`. `admitted` is set
    on each subscribe: a barrier for 'the subscription is in place'."""

    def __init__(self) -> None:
        self.subscriptions: list[FakeSubscription] = []
        self.admitted = asyncio.Event()

    async def subscribe(self, source: LiveSource, selection: Any, sink: Any) -> FakeSubscription:
        subscription = FakeSubscription(source, sink)
        self.subscriptions.append(subscription)
        self.admitted.set()
        return subscription

    async def next_subscription(self) -> FakeSubscription:
        await asyncio.wait_for(self.admitted.wait(), 2)
        self.admitted.clear()
        return self.subscriptions[-1]


class FakeSlot:
    def __init__(self, quota: FakeQuota, kind: str, user: int) -> None:
        self.quota, self.kind, self.user = quota, kind, user

    def release(self) -> None:
        self.quota.held[self.kind, self.user] -= 1


class FakeQuota:
    """live.quota's LiveQuota, counted in a dict."""

    def __init__(self, connections: int, subscriptions: int) -> None:
        self.limits = {"connections": connections, "subscriptions": subscriptions}
        self.held: dict[tuple[str, int], int] = {}

    async def take(self, kind: str, user: int) -> FakeSlot | None:
        count = self.held.get((kind, user), 0)
        if count >= self.limits[kind]:
            return None
        self.held[kind, user] = count + 1
        return FakeSlot(self, kind, user)


def live_server(**overrides: Any) -> tuple[LiveServer, FakeEngine]:
    engine = FakeEngine()

    async def authenticate(token: str | None) -> Viewer | None:
        if token == UNAVAILABLE:
            raise OSError("connection refused")
        user = TOKENS.get(token or "")
        return viewer_of(user) if user is not None else None

    async def revalidate(viewer: Viewer) -> Viewer:
        return viewer

    operations = Operations(schema(), error_formatter=lambda error, _debug: error.formatted)
    settings: dict[str, Any] = {
        "operations": operations,
        "engine": engine,
        "context": lambda viewer, _connection, _last_event_id: {"viewer": viewer},
        "authenticate": authenticate,
        "revalidate": revalidate,
        "keepalive": Keepalive(60),
        "init_timeout": 10,
        "max_subscriptions": 3,
        "send_queue": 8,
        **overrides,
    }
    return LiveServer(**settings), engine


class FakeWebSocketClient:
    """The client end of an ASGI WebSocket: `send` puts a message for the app, `next` reads the
    app's next frame (parsed JSON), `closed` waits for its close. Frames come through `writer`,
    as uvicorn's protocol takes them (transports.outbox's DirectWriter); while `stalled`, it
    takes none (a client that stopped reading)."""

    def __init__(self, subprotocols: list[str], stalled: bool = False) -> None:
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "path": "/graphql",
            "headers": [],
            "subprotocols": subprotocols,
            "query_string": b"",
        }
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._to_app.put_nowait({"type": "websocket.connect"})
        self.stalled = stalled
        self.accepted: str | None = None
        self.accepted_event = asyncio.Event()
        self.writer = FakeWriter(self)

    async def receive(self) -> dict[str, Any]:  # the app's
        return await self._to_app.get()

    async def asgi_send(self, message: dict[str, Any]) -> None:  # the app's
        if message["type"] == "websocket.accept":
            self.accepted = message.get("subprotocol")
            self.accepted_event.set()
        self._from_app.put_nowait(message)

    def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self._to_app.put_nowait({"type": "websocket.receive", "text": text})

    def disconnect(self) -> None:
        self._to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})

    async def _next_message(self) -> dict[str, Any]:
        while True:
            message = await asyncio.wait_for(self._from_app.get(), 2)
            if message["type"] != "websocket.accept":
                return message

    async def next(self) -> dict[str, Any]:
        message = await self._next_message()
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def closed(self) -> tuple[int, str]:
        """The close the app sent, past any frames before it."""
        while True:
            message = await self._next_message()
            if message["type"] == "websocket.close":
                self.disconnect()  # as a client answers a close
                return message["code"], message.get("reason", "")

    def pending(self) -> list[dict[str, Any]]:
        """What the app has sent and the test has not read (frames as parsed JSON)."""
        out = []
        while not self._from_app.empty():
            message = self._from_app.get_nowait()
            if message["type"] == "websocket.send":
                out.append(json.loads(message["text"]))
            elif message["type"] == "websocket.close":
                out.append({"close": message["code"]})
        return out


class FakeWriter:
    """A WebSocket's frames written at once, as uvicorn's protocol writes them (never while the
    client is stalled)."""

    def __init__(self, client: FakeWebSocketClient) -> None:
        self.client = client
        self.open = True

    def write(self, data: bytes) -> bool:
        if self.client.stalled:
            return False
        self.client._from_app.put_nowait({"type": "websocket.send", "text": data.decode()})
        return True

    async def wait_writable(self) -> None:
        await asyncio.Event().wait()  # a stalled client never reads again


class FakeHTTPClient:
    """The client end of an ASGI HTTP request: the response's start and body chunks."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": "/graphql",
            "headers": list(headers or []),
            "query_string": b"",
        }
        self._disconnected = asyncio.Event()
        self.start: dict[str, Any] | None = None
        self.chunks: list[bytes] = []
        self.ended = asyncio.Event()
        self.changed = asyncio.Event()

    async def receive(self) -> dict[str, Any]:  # the app's
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def asgi_send(self, message: dict[str, Any]) -> None:  # the app's
        if message["type"] == "http.response.start":
            self.start = message
        else:
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.ended.set()
                self._disconnected.set()  # uvicorn reports the disconnect once the response ended
        self.changed.set()

    def leave(self) -> None:
        self._disconnected.set()

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def until(self, done: Callable[[bytes], bool]) -> bytes:
        """The body so far, once `done` says it has what the test waits for."""
        while not done(self.body):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 2)
        return self.body
