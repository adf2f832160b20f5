"""Each reach into a library's internals (core/reaches.py) against the public API it replaces,
in one process and one run: `python -m bench.reaches` (`make bench-reaches`, about two minutes).

Every comparison runs its variants alternately, in rounds whose order turns each time (the
machine is shared and drifts), and prints each variant's median over the rounds with the
spread (lowest to highest), and the difference as a share of the README figure the reach
serves. A reach stays where that share is over 5%.

- the unread request's read (100 rows, Postgres at DATABASE_URL or the local default): the
  pool's reaches one at a time against their public alternatives, CPU per read; and requests
  per second, 25 in flight on 5 connections, each the read and the rest of a request's CPU;
- the unread request's list completed by graphql-core's executor and by ours; and objects
  within objects: a room list's 500 rooms with their last message and its sender, and one
  `myRooms` note's room (planned alike since the room lists' work);
- a WebSocket delivery to 200 sockets through their outboxes (transports/outbox.py): a frame
  written by `LeanWebSocketProtocol.write`, and what the outbox does without it (a writer task
  awaiting starlette's and uvicorn's `send`); an SSE delivery the same, with `ChunkWriter`;
- memory per idle WebSocket and per idle SSE stream: uvicorn's protocols and ours (tracemalloc,
  300 connections);
- a broadcast event to a subscriber: broadcaster's public `Broadcast` (as it is now) and the
  former reach into its subscriber table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import statistics
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import sqlalchemy as sa
from broadcaster import Broadcast
from databases import Database
from graphql import Executor, build_schema, execute_root_selection_set, parse
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from core.broadcast import LocalBackend, ResyncingQueue, open_broadcast
from db import pool
from db.records import ReadOnlyRow, as_rows
from execution.lean_executor import LeanExecutor
from serving import uvicorn_protocols
from serving.uvicorn_protocols import DrainingHttpProtocol, LeanWebSocketProtocol, chunk_writer, frame_writer

# The README figures each reach serves (Performance), the denominators of the shares printed.
UNREAD_CPU_US = 390.0  # worker CPU per unread request, 374-408 µs
HEARTBEAT_CPU_US = 1300.0  # a typing heartbeat in-process, 1.0 to 1.6 ms
UNREAD_RPS = 3100.0  # `{ rooms { unreadCount } }` over 100 rooms, 2,931-3,275 req/s
WS_DELIVERY_US = 17.0  # server CPU per delivery, S=1000, WebSocket
MY_ROOMS_DELIVERY_US = 54.0  # server CPU per `myRooms` delivery, S=1000 (bench.room_lists)
SSE_DELIVERY_US = 19.3  # server CPU per delivery, S=1000, SSE
IDLE_WS_KIB = 14.1  # memory per idle subscribed WebSocket
IDLE_SSE_KIB = 12.3  # memory per idle SSE subscriber
EVENT_US = WS_DELIVERY_US * 500  # one event's fan-out on a worker holding 500 of S=1000

OTHER_CPU_US = UNREAD_CPU_US - 100  # an unread request's CPU besides reading its rows
Variant = Callable[[], Awaitable[float]]  # one round: the measure


async def compare(title: str, unit: str, variants: dict[str, Variant], rounds: int) -> dict[str, list[float]]:
    """Every variant once per round, in an order that turns each round (the first variant is
    the reach, the others the public API)."""
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        if round_ % 2:
            order.reverse()
        for name in order:
            gc.collect()
            results[name].append(await variants[name]())
    print(f"\n{title}")
    for name in names:
        values = results[name]
        print(f"  {name:<52} {statistics.median(values):9.2f} {unit}  ({min(values):.2f} to {max(values):.2f})")
    return results


def share(label: str, reach: list[float], public: list[float], figure: float, what: str, higher: bool = False) -> None:
    """What the reach saves against the public API (the median of each, and the spread of the
    rounds' pairs), as a share of the README figure; `higher`: the measure is better higher."""
    sign = -1 if higher else 1
    saving = sign * (statistics.median(public) - statistics.median(reach))
    pairs = sorted(sign * (p - r) for p, r in zip(public, reach, strict=True))
    print(
        f"  -> {label}: {saving:+.2f} ({pairs[0]:+.2f} to {pairs[-1]:+.2f} by round), "
        f"{100 * saving / figure:+.1f}% of {what} ({figure:g})"
    )


def burn(microseconds: float) -> None:
    """CPU spent in this process, as a request's own work would spend it."""
    until = time.process_time() + microseconds / 1e6
    while time.process_time() < until:
        pass


def cpu_per_call(calls: int, call: Callable[[], Awaitable[Any]]) -> Variant:
    async def run() -> float:
        start = time.process_time()
        for _ in range(calls):
            await call()
        return (time.process_time() - start) / calls * 1e6

    return run


# The unread read.

UNREAD_SQL = (
    "SELECT g AS id, 'room ' || g AS name, (g * :user) % 7 AS unread_count, g % 3 = 0 AS muted"
    " FROM generate_series(1, 100) AS g ORDER BY g"
)
KEPT = sa.text(UNREAD_SQL).bindparams(sa.bindparam("user", type_=sa.Integer))


async def former_release(pool_: asyncpg.Pool, proxy: Any) -> None:
    """The removed reach (db/asyncpg_pool.py, asyncpg 0.32.0): a connection that needs nothing
    done to it put back in the releasing task, where asyncpg's release takes a shielded task."""
    connection, holder = proxy._con, proxy._holder
    if (
        connection is not None
        and not connection.is_closed()
        and holder._pool is pool_
        and not pool_._closing
        and not pool_._closed
        and pool_._reset is None
        and not connection.get_reset_query()
        and not connection._protocol.is_in_transaction()
        and connection._top_xact is None
        and not connection._protocol._is_cancelling()
        and connection._protocol.queries_count < holder._max_queries
        and holder._generation == pool_._generation
    ):
        connection._on_release()
        await holder.release(None)
    else:
        await pool_.release(proxy)


@asynccontextmanager
async def releasing(how: Callable[..., Awaitable[None]]) -> AsyncIterator[None]:
    """db.pool's release swapped for `how` while in the block."""
    ours = pool._released
    pool._released = how  # type: ignore[assignment]
    try:
        yield
    finally:
        pool._released = ours  # type: ignore[assignment]


async def unread(rounds: int, calls: int) -> None:
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    ours = pool.ChatDatabase(url, min_size=5, max_size=5)
    stock = Database(url, min_size=5, max_size=5, connection_class=pool.NoResetQueryConnection)
    await ours.connect()
    await stock.connect()
    try:

        async def views() -> Any:
            return await pool.fetch_views(ours, KEPT, {"user": 3})

        async def views_former_release() -> Any:
            async with releasing(former_release):
                return await pool.fetch_views(ours, KEPT, {"user": 3})

        async def dict_rows() -> Any:
            return await pool.fetch_rows(ours, KEPT, {"user": 3})

        async def per_task_connection() -> Any:  # databases' fetch_all: its Connection, its Records
            return as_rows(await ours.fetch_all(KEPT.bindparams(user=3)))

        async def public() -> Any:  # databases as it is: compiled per call, its Connection and Records
            return as_rows(await stock.fetch_all(KEPT.bindparams(user=3)))

        for read in (views, dict_rows, per_task_connection, public):
            assert len(await read()) == 100
        assert type((await views())[0]) is ReadOnlyRow
        variants = {
            "fetch_views, as it is": views,
            "with the removed release (db/asyncpg_pool.py)": views_former_release,
            "dict rows (without ReadOnlyRow as a Mapping)": dict_rows,
            "databases' fetch_all (without fetch_rows' bypass)": per_task_connection,
            "stock databases (without the compiled statements)": public,
        }
        results = await compare(
            "The unread read, 100 rows, one at a time: client CPU per read",
            "µs",
            {name: cpu_per_call(calls, read) for name, read in variants.items()},
            rounds,
        )
        names = list(variants)
        what = "CPU per unread request, µs"
        share("the removed release's saving", results[names[1]], results[names[0]], UNREAD_CPU_US, what)
        share("ReadOnlyRow as a Mapping", results[names[0]], results[names[2]], UNREAD_CPU_US, what)
        share("fetch_rows' bypass", results[names[0]], results[names[3]], UNREAD_CPU_US, what)
        share("the compiled statements (a text statement)", results[names[3]], results[names[4]], UNREAD_CPU_US, what)
        share("all of db/pool.py's reaches", results[names[0]], results[names[4]], UNREAD_CPU_US, what)

        # A batched read (an access check: two per typing heartbeat), its IN list given per call.
        numbers = sa.text("SELECT g AS n FROM generate_series(1, 100) AS g").columns(n=sa.Integer).subquery()
        kept_in = sa.select(numbers.c.n).where(numbers.c.n.in_(sa.bindparam("ns", expanding=True)))
        ids = list(range(1, 60, 6))

        async def batched_kept() -> Any:
            return await pool.fetch_rows(ours, kept_in, {"ns": ids})

        async def batched_cached() -> Any:  # built per call, its compiled form found by its cache key
            return as_rows(await ours.fetch_all(sa.select(numbers.c.n).where(numbers.c.n.in_(ids))))

        async def batched_stock() -> Any:  # built and compiled per call, as databases does
            return as_rows(await stock.fetch_all(sa.select(numbers.c.n).where(numbers.c.n.in_(ids))))

        assert len(await batched_kept()) == len(await batched_cached()) == len(await batched_stock()) == 10
        batched = await compare(
            "A batched read (10 ids in an IN list): client CPU per read",
            "µs",
            {
                "fetch_rows, kept and expanded per call": cpu_per_call(calls, batched_kept),
                "databases' fetch_all, compiled form cached": cpu_per_call(calls, batched_cached),
                "stock databases, compiled per call": cpu_per_call(calls, batched_stock),
            },
            rounds,
        )
        kept_, cached_, stock_ = ([2 * value for value in values] for values in batched.values())
        what = "CPU per typing heartbeat (two batched reads), µs"
        share("the compiled statements", cached_, stock_, HEARTBEAT_CPU_US, what)
        share("kept statements and fetch_rows' bypass", kept_, cached_, HEARTBEAT_CPU_US, what)
        share("all of db/pool.py's reaches", kept_, stock_, HEARTBEAT_CPU_US, what)

        def requests(read: Callable[[], Awaitable[Any]]) -> Variant:
            """Unread requests as a worker serves them: 25 in flight on 5 connections, each the
            read and then the rest of the request's CPU (OTHER_CPU_US, the README's worker CPU
            per unread request less the read); requests per second."""

            async def run() -> float:
                async def client() -> None:
                    for _ in range(calls // 40):
                        await read()
                        await asyncio.sleep(0)  # the request's own turns: execution, the response
                        burn(OTHER_CPU_US)
                        await asyncio.sleep(0)

                start = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(25)))
                return 25 * (calls // 40) / (time.perf_counter() - start)

            return run

        served = await compare(
            "Unread requests, 25 in flight on 5 connections: requests per second (higher is better)",
            "/s",
            {"with the removed release": requests(views_former_release), "as it is": requests(views)},
            rounds,
        )
        share(
            "the removed release's gain",
            served["with the removed release"],
            served["as it is"],
            UNREAD_RPS,
            "unread req/s",
            higher=True,
        )
    finally:
        await ours.disconnect()
        await stock.disconnect()


# The unread list completed.

SCHEMA = build_schema(
    """
    type Room { id: ID! name: String! unreadCount: Int! muted: Boolean! }
    type Query { rooms: [Room!]! }
    """
)
SCHEMA.type_map["Room"].fields["unreadCount"].resolve = lambda row, _info: row["unread_count"]  # type: ignore[attr-defined]
UNREAD = parse("{ rooms { id name unreadCount muted } }")
ROWS = [{"id": i, "name": f"room {i}", "unread_count": i % 7, "muted": i % 3 == 0} for i in range(100)]


def executes(kind: type[Executor], calls: int) -> Variant:
    async def run() -> float:
        start = time.process_time()
        for _ in range(calls):
            executor = kind.build(SCHEMA, UNREAD, root_value={"rooms": ROWS})
            assert not isinstance(executor, list)
            result = execute_root_selection_set(executor)
            assert not asyncio.iscoroutine(result) and not result.errors  # type: ignore[union-attr]
        return (time.process_time() - start) / calls * 1e6

    return run


async def executor(rounds: int, calls: int) -> None:
    from execution import lean_executor
    from resolvers.room import reads  # noqa: F401 (the app's resolvers mark their reads the same way)

    SCHEMA.type_map["Room"].fields["unreadCount"].resolve = lean_executor.reads("unread_count")(  # type: ignore[attr-defined]
        lambda row, _info: row["unread_count"]
    )
    results = await compare(
        "The unread list completed (100 rooms, 4 fields): CPU per execution",
        "µs",
        {
            "LeanExecutor (flat lists)": executes(LeanExecutor, calls),
            "graphql-core's Executor": executes(Executor, calls),
        },
        rounds,
    )
    share(
        "graphql-core's executor",
        results["LeanExecutor (flat lists)"],
        results["graphql-core's Executor"],
        UNREAD_CPU_US,
        "CPU per unread request, µs",
    )


# Objects within objects: a room list, and a `myRooms` note's room.

NESTED_SCHEMA = build_schema(
    """
    type User { id: ID! name: String! }
    type Message { id: ID! body: String! sender: User! }
    type Room { id: ID! name: String! unreadCount: Int! lastMessage: Message }
    type Change { change: String! roomId: ID! room: Room }
    type Query { rooms: [Room!]! note: Change! }
    """
)
ROOM_LIST = parse("{ rooms { id name unreadCount lastMessage { id body sender { id name } } } }")
NOTE = parse("{ note { change roomId room { unreadCount lastMessage { body } } } }")
LISTED = [
    {
        "id": i,
        "name": f"room {i}",
        "unreadCount": i % 7,
        "lastMessage": {"id": i, "body": "hi", "sender": {"id": 1, "name": "a"}},
    }
    for i in range(500)
]
NOTED = {"change": "UPDATED", "roomId": 1, "room": LISTED[1]}


def executes_nested(kind: type[Executor], document: Any, root: dict, calls: int) -> Variant:
    async def run() -> float:
        start = time.process_time()
        for _ in range(calls):
            executor = kind.build(NESTED_SCHEMA, document, root_value=root)
            assert not isinstance(executor, list)
            result = execute_root_selection_set(executor)
            assert not asyncio.iscoroutine(result) and not result.errors  # type: ignore[union-attr]
        return (time.process_time() - start) / calls * 1e6

    return run


async def nested(rounds: int, calls: int) -> None:
    lists = await compare(
        "A room list completed (500 rooms, each with its last message and its sender): CPU per execution",
        "µs",
        {
            "LeanExecutor (objects planned)": executes_nested(LeanExecutor, ROOM_LIST, {"rooms": LISTED}, calls),
            "graphql-core's Executor": executes_nested(Executor, ROOM_LIST, {"rooms": LISTED}, calls),
        },
        rounds,
    )
    ours, theirs = (statistics.median(values) for values in lists.values())
    print(f"  -> graphql-core's executor takes {theirs / ours:.1f}x as long")
    notes = await compare(
        "A `myRooms` note completed (its room's count and last message): CPU per execution",
        "µs",
        {
            "LeanExecutor (objects planned)": executes_nested(LeanExecutor, NOTE, {"note": NOTED}, calls * 100),
            "graphql-core's Executor": executes_nested(Executor, NOTE, {"note": NOTED}, calls * 100),
        },
        rounds,
    )
    share(
        "graphql-core's executor",
        notes["LeanExecutor (objects planned)"],
        notes["graphql-core's Executor"],
        MY_ROOMS_DELIVERY_US,
        "CPU per myRooms delivery, µs",
    )


# Deliveries and idle memory.


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


UPGRADE = (
    b"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
)
FRAME = b'{"id":"1","type":"next","payload":{"data":{"messageCreated":{"id":"123456","body":"hello there, how are you","sender":{"id":"42","name":"Ann"}}}}}'  # noqa: E501


async def opened(kind: type, count: int, sends: list[Any], done: asyncio.Event) -> list[Any]:
    """`count` WebSocket connections through the protocol `kind`, accepted and idle until `done`."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        from starlette.websockets import WebSocket

        websocket = WebSocket(scope, receive, send)  # as the app accepts one
        await websocket.accept(subprotocol="graphql-transport-ws")
        sends.append((websocket, send))
        await done.wait()

    config = Config(
        app=app, ws=kind, ws_ping_interval=None, ws_per_message_deflate=False, lifespan="off", log_config=None
    )
    config.load()
    state = ServerState()
    protocols = []
    for _ in range(count):
        protocol = kind(config=config, server_state=state, app_state={})
        protocol.connection_made(Transport())
        protocol.data_received(UPGRADE)
        protocols.append(protocol)
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(sends) == count
    return protocols


async def kept_by(opening: Awaitable[list[Any]]) -> tuple[list[Any], int]:
    """What `opening` opened, and the bytes of it still held once it is done and collected
    (tracemalloc: what the opened protocols and their app tasks keep while idle)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    made = await opening
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return made, kept


async def closed(protocols: list[Any], done: asyncio.Event) -> None:
    done.set()
    for _ in range(5):
        await asyncio.sleep(0)
    for protocol in protocols:
        protocol.connection_lost(None)
    for _ in range(5):
        await asyncio.sleep(0)


SOCKETS = 200


def fanned_out(outboxes: list[Any], events: int) -> Variant:
    """`events` results put to every outbox, as the live engine fans one out; CPU per delivery,
    the outboxes' writer tasks (the path without a direct writer) included."""

    async def run() -> float:
        start = time.process_time()
        for _ in range(events):
            for outbox in outboxes:
                outbox.put(FRAME)
            while any(outbox._writer is not None for outbox in outboxes):
                await asyncio.sleep(0)
        return (time.process_time() - start) / (events * len(outboxes)) * 1e6

    return run


async def websocket(rounds: int, events: int) -> None:
    from transports.outbox import WebSocketOutbox

    SLOW = (1013, "Slow consumer")  # a protocol's close for an outbox past its limit (unused here)

    def idle(kind: type) -> Variant:
        async def run() -> float:
            sends: list[Any] = []
            done = asyncio.Event()
            protocols, kept = await kept_by(opened(kind, 300, sends, done))
            await closed(protocols, done)
            return kept / 300 / 1024

        return run

    memory = await compare(
        "An idle accepted WebSocket (300, the app's task included): memory each",
        "KiB",
        {
            "LeanWebSocketProtocol": idle(LeanWebSocketProtocol),
            "uvicorn's WebSocketsSansIOProtocol": idle(WebSocketsSansIOProtocol),
        },
        rounds,
    )
    share(
        "uvicorn's protocol",
        memory["LeanWebSocketProtocol"],
        memory["uvicorn's WebSocketsSansIOProtocol"],
        IDLE_WS_KIB,
        "memory per idle subscribed WebSocket, KiB",
    )

    sends: list[Any] = []
    done = asyncio.Event()
    protocols = await opened(LeanWebSocketProtocol, SOCKETS, sends, done)
    direct = [WebSocketOutbox(websocket, frame_writer(send), 1000, SLOW) for websocket, send in sends]
    through_send = [WebSocketOutbox(websocket, None, 1000, SLOW) for websocket, _send in sends]
    assert all(outbox.direct is not None for outbox in direct)
    for outbox in through_send:
        outbox.put(FRAME)
    while any(outbox._writer is not None for outbox in through_send):
        await asyncio.sleep(0)
    assert not any(outbox.closed for outbox in through_send)
    deliveries = await compare(
        f"A WebSocket delivery to {SOCKETS} sockets through their outboxes: CPU per delivery",
        "µs",
        {
            "LeanWebSocketProtocol.write": fanned_out(direct, events),
            "uvicorn's send (a writer task)": fanned_out(through_send, events),
        },
        rounds,
    )
    share(
        "uvicorn's send",
        deliveries["LeanWebSocketProtocol.write"],
        deliveries["uvicorn's send (a writer task)"],
        WS_DELIVERY_US,
        "CPU per delivery, µs",
    )
    await closed(protocols, done)


async def sse(rounds: int, events: int) -> None:
    from transports.outbox import StreamOutbox

    streams: list[Any] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        scope[uvicorn_protocols.SERVER_SEND] = send
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        streams.append((scope, send))
        await done.wait()

    async def open_streams(kind: type, count: int) -> list[Any]:
        config = Config(app=app, http=kind, lifespan="off", log_config=None, access_log=False)
        config.load()
        state = ServerState()
        protocols = []
        for _ in range(count):
            protocol = kind(config=config, server_state=state, app_state={})
            protocol.connection_made(Transport())
            protocol.data_received(b"GET /graphql HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            protocols.append(protocol)
        for _ in range(50):
            await asyncio.sleep(0)
        return protocols

    async def ended(protocols: list[Any]) -> None:
        done.set()
        for _ in range(5):
            await asyncio.sleep(0)
        for protocol in protocols:
            protocol.connection_lost(None)
        for _ in range(5):
            await asyncio.sleep(0)
        done.clear()
        streams.clear()

    def idle(kind: type) -> Variant:
        async def run() -> float:
            protocols, kept = await kept_by(open_streams(kind, 300))
            assert len(streams) == 300
            await ended(protocols)
            return kept / 300 / 1024

        return run

    memory = await compare(
        "An idle SSE stream (300, the app's task included): memory each",
        "KiB",
        {
            "DrainingHttpProtocol (Pipeline, LeanEvent)": idle(DrainingHttpProtocol),
            "uvicorn's HttpToolsProtocol": idle(HttpToolsProtocol),
        },
        rounds,
    )
    share(
        "uvicorn's protocol",
        memory["DrainingHttpProtocol (Pipeline, LeanEvent)"],
        memory["uvicorn's HttpToolsProtocol"],
        IDLE_SSE_KIB,
        "memory per idle SSE subscriber, KiB",
    )

    protocols = await open_streams(DrainingHttpProtocol, SOCKETS)
    assert len(streams) == SOCKETS
    direct = [StreamOutbox(send, chunk_writer(scope), 1000) for scope, send in streams]
    through_send = [StreamOutbox(send, None, 1000) for _scope, send in streams]
    assert all(outbox.direct is not None for outbox in direct)
    deliveries = await compare(
        f"An SSE delivery to {SOCKETS} streams through their outboxes: CPU per delivery",
        "µs",
        {
            "ChunkWriter.write": fanned_out(direct, events),
            "uvicorn's send (a writer task)": fanned_out(through_send, events),
        },
        rounds,
    )
    share(
        "uvicorn's send",
        deliveries["ChunkWriter.write"],
        deliveries["uvicorn's send (a writer task)"],
        SSE_DELIVERY_US,
        "SSE CPU per delivery, µs",
    )
    await ended(protocols)


# The broadcast: as it is (public Broadcast), and the former reach into its subscriber table.


class FormerBroadcast(Broadcast):
    """What core/broadcast.py was: its own queue put straight into broadcaster's subscriber table."""

    @asynccontextmanager
    async def subscribe_bounded(self, channel: str, bound: int) -> AsyncIterator[asyncio.Queue]:
        queue = ResyncingQueue(bound)
        queues = self._subscribers.setdefault(channel, set())
        queues.add(queue)  # type: ignore[arg-type]
        await self._backend.subscribe(channel)
        try:
            yield queue
        finally:
            queues.discard(queue)  # type: ignore[arg-type]
            if not queues:
                del self._subscribers[channel]


async def broadcast(rounds: int, calls: int) -> None:
    async def through(subscribed: Any, publish: Callable[[str, str], Awaitable[None]], get: Any) -> float:
        async with subscribed:
            start = time.process_time()
            for n in range(calls):
                await publish("room", "x")
                if n % 50 == 49:  # a feed reads what arrived in a burst
                    for _ in range(50):
                        await get()
            return (time.process_time() - start) / calls * 1e6

    async def public() -> float:
        channels = open_broadcast(None)
        await channels.connect()
        try:
            subscription = channels.subscribe("room", bound=10_000)
            async with subscription as subscriber:
                return await through(_nothing(), channels.publish, subscriber.get)
        finally:
            await channels.disconnect()

    async def former() -> float:
        channels = FormerBroadcast(backend=LocalBackend())
        await channels.connect()
        try:
            async with channels.subscribe_bounded("room", 10_000) as queue:
                return await through(_nothing(), channels.publish, queue.get)
        finally:
            await channels.disconnect()

    results = await compare(
        "A broadcast event to one subscribing feed: CPU per event",
        "µs",
        {"public Broadcast (now)": public, "into its subscriber table (before)": former},
        rounds,
    )
    share(
        "the former reach's saving",
        results["into its subscriber table (before)"],
        results["public Broadcast (now)"],
        EVENT_US,
        "one event's fan-out per worker at S=1000, µs",
    )


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds, few calls")
    args = parser.parse_args()
    # The in-process servers' apps end with their connections unclosed: nothing to report.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    rounds, scale = (3, 0.1) if args.quick else (9, 1.0)
    started = time.perf_counter()
    await unread(rounds, int(2000 * scale))
    await executor(rounds, int(400 * scale))
    await nested(rounds, int(20 * scale) or 1)
    await websocket(rounds, int(100 * scale))
    await sse(rounds, int(100 * scale))
    await broadcast(rounds, int(20_000 * scale))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
