"""Every reach into a library beyond its public API is listed in core/reaches.py, with the
version it was written against. These tests fail loudly when the installed library is another
version, or when what a reach relies on no longer behaves as it did: the saving, or the
behaviour it buys, must never be lost quietly. Each reach names its guard here."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import Mapping
from importlib.metadata import version
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from databases import Database
from databases.backends.common.records import create_column_maps
from databases.backends.postgres import PostgresConnection
from graphql import GraphQLError, GraphQLInt, default_field_resolver
from uvicorn.config import Config
from uvicorn.server import ServerState

from core import broadcast, errors, logs, outages
from core.errors import ServiceUnavailable
from core.reaches import REACHES
from db import pool, records
from db.records import ReadOnlyRow
from db.tables import messages
from execution import lean_executor
from execution.lean_executor import reads
from live import source
from serving import uvicorn_protocols, worker
from serving.uvicorn_protocols import (
    DrainingHttpProtocol,
    LeanEvent,
    LeanWebSocketProtocol,
    ReceiveQueue,
    chunk_writer,
    frame_writer,
)
from tests.support.processes import ROOT
from tests.support.rawws import client_frame, upgrade_request


def test_each_reach_is_written_against_the_installed_version() -> None:
    assert REACHES
    for reach in REACHES:
        assert version(reach.library) == reach.version, reach
    # The reaching modules take their versions from the list.
    assert uvicorn_protocols.WRITTEN_AGAINST == logs.WRITTEN_AGAINST == version("uvicorn")
    assert worker.WRITTEN_AGAINST == version("uvicorn-worker")
    assert pool.WRITTEN_AGAINST == {"databases": version("databases"), "sqlalchemy": version("sqlalchemy")}
    assert records.WRITTEN_AGAINST == outages.WRITTEN_AGAINST == version("asyncpg")
    assert lean_executor.WRITTEN_AGAINST == source.WRITTEN_AGAINST == version("graphql-core")
    assert errors.WRITTEN_AGAINST == version("graphql-core")


def test_every_reach_has_its_guard_here_and_its_line_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("**Where the code reaches into a library's internals**") :]
    table = table[: table.index("\n## ")]
    for reach in REACHES:
        assert callable(globals().get(reach.guard)), reach.guard
        module = reach.where.split(":")[0]
        assert (ROOT / module).is_file(), module
        assert f"`{module}`" in table and f"{reach.library} {reach.version}" in table, reach
    for module in {reach.where.split(":")[0] for reach in REACHES}:
        assert "written_against" in (ROOT / module).read_text() or module.startswith("transports/"), module


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += data

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


async def test_the_lean_websocket_protocol_keeps_little_and_writes_whole_frames() -> None:
    sends: list[Any] = []

    async def app(_scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "graphql-transport-ws"})
        sends.append(send)
        while (await receive())["type"] != "websocket.disconnect":
            pass

    config = Config(app=app, ws=LeanWebSocketProtocol, ws_ping_interval=None, lifespan="off", log_level="warning")
    config.load()
    protocol = LeanWebSocketProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(upgrade_request("127.0.0.1", 8000, "/graphql", "graphql-transport-ws"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 101")
    # What an idle connection no longer keeps: the handshake, and the library's queue and event.
    assert protocol.request is None and protocol.response is None
    assert isinstance(protocol.queue, ReceiveQueue) and isinstance(protocol.writable, LeanEvent)

    # The live engine finds the protocol behind `send` and writes frames to the transport.
    assert frame_writer(sends[0]) is protocol
    before = len(transport.written)
    written = LeanWebSocketProtocol.frames_written
    assert protocol.write(b'{"type":"next"}')
    long = b"x" * 300
    assert protocol.write(long)
    assert bytes(transport.written[before:]) == b"\x81\x0f" + b'{"type":"next"}' + b"\x81\x7e\x01\x2c" + long
    assert LeanWebSocketProtocol.frames_written == written + 2
    protocol.pause_writing()  # over the high-water mark: the caller queues and waits instead
    assert not protocol.write(b"{}")
    protocol.resume_writing()
    await protocol.wait_writable()
    assert protocol.write(b"{}")
    protocol.data_received(client_frame(0x8, (1000).to_bytes(2, "big")))  # the client closes
    assert not protocol.write(b"{}")


async def test_streamed_chunks_go_straight_to_the_transport_and_a_draining_worker_ends_streams() -> None:
    sends: list[Any] = []
    drained: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        scope[uvicorn_protocols.ON_DRAIN] = lambda: drained.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        sends.append(send)
        while (await receive())["type"] != "http.disconnect":
            pass

    config = Config(app=app, http=DrainingHttpProtocol, lifespan="off", log_level="warning")
    config.load()
    protocol = DrainingHttpProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /graphql HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    for _ in range(20):
        await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in transport.written
    # What a long-lived response no longer keeps: asyncio's events, each with an empty deque.
    assert isinstance(protocol.flow._is_writable_event, LeanEvent)
    assert protocol.cycle is not None and isinstance(protocol.cycle.message_event, LeanEvent)
    assert isinstance(protocol.pipeline, uvicorn_protocols.Pipeline)
    # Its attributes stay within the keys its class shares (CPython then keeps only the values
    # per connection): one more of ours, outside __slots__, would give every open stream a
    # whole dict of its own.
    assert sys.getsizeof(vars(protocol)) < sys.getsizeof(dict(vars(protocol))), len(vars(protocol))

    writer = chunk_writer({uvicorn_protocols.SERVER_SEND: sends[0]})
    assert writer is not None and writer.open
    before = len(transport.written)
    assert writer.write(b":\n\n") and writer.write(b"")  # an empty chunk would end the response: not written
    assert bytes(transport.written[before:]) == b"3\r\n:\n\n\r\n"
    protocol.pause_writing()
    assert not writer.write(b"x")
    protocol.resume_writing()
    await writer.wait_writable()

    protocol.shutdown()  # the worker stops: the stream is told, and its connection closes after it
    assert drained == [True] and protocol.cycle is not None and not protocol.cycle.keep_alive
    assert sys.getsizeof(vars(protocol)) < sys.getsizeof(dict(vars(protocol))), len(vars(protocol))
    await sends[0]({"type": "http.response.body", "body": b"", "more_body": False})
    assert not writer.open and not writer.write(b"x")
    assert transport.written.endswith(b"0\r\n\r\n")


async def test_a_request_head_past_the_bound_is_refused_as_its_bytes_arrive() -> None:
    """DrainingHttpProtocol counts a head's bytes from the parser's `on_message_begin` to its
    `on_headers_complete` (uvicorn's callbacks) across reads, and starts again with the next
    request on the connection."""
    answered: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        answered.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = Config(app=app, http=DrainingHttpProtocol, lifespan="off", log_level="warning")
    config.load()
    protocol = DrainingHttpProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    bound = uvicorn_protocols.MAX_REQUEST_HEAD_BYTES
    pad = b"x-pad: " + b"p" * (bound * 3 // 4) + b"\r\n"
    for path in (b"/a", b"/b"):  # each under the bound, together over it
        protocol.data_received(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
        for _ in range(20):
            await asyncio.sleep(0)
    assert answered == ["/a", "/b"] and not transport.closing
    protocol.data_received(b"GET /c HTTP/1.1\r\nHost: x\r\nauthorization: Bearer ")
    while not transport.closing:
        protocol.data_received(b"a" * 4096)
        assert protocol.head_bytes <= bound + 4096
    assert transport.written.endswith(b"Request line and headers too large")
    assert b"HTTP/1.1 431 " in transport.written and answered == ["/a", "/b"]


async def test_a_response_marked_not_counted_does_not_count_towards_max_requests() -> None:
    """uvicorn counts every response in `on_response_complete`, called through the cycle's
    `on_response`; DrainingHttpProtocol takes a marked one's count back, pipelined ones included."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/healthz":
            scope[uvicorn_protocols.NOT_COUNTED] = True
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = Config(app=app, http=DrainingHttpProtocol, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    protocol = DrainingHttpProtocol(config=config, server_state=state, app_state={})
    protocol.connection_made(Transport())
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
    protocol.data_received(request % b"/healthz" + request % b"/graphql" + request % b"/readyz")  # pipelined
    for _ in range(50):
        await asyncio.sleep(0)
    assert state.total_requests == 2
    protocol.data_received(request % b"/healthz")
    for _ in range(20):
        await asyncio.sleep(0)
    assert state.total_requests == 2


async def test_the_pool_compiles_statements_as_databases_does() -> None:
    """The compiled-statement cache must produce what `databases` itself would."""
    query = sa.select(messages.c.id, messages.c.body).where(messages.c.room_id == 7, messages.c.seq > 3).limit(5)
    dialect = pool.BoundedWaitBackend("postgresql://u@h/d")._dialect
    ours = pool.BoundedWaitConnection(pool.BoundedWaitBackend("postgresql://u@h/d"), dialect)
    theirs = PostgresConnection(pool.BoundedWaitBackend("postgresql://u@h/d"), dialect)
    for _ in range(2):  # compiled, then from the cache, with the column maps of its rows
        assert ours._compile(query)[:2] == theirs._compile(query)[:2]
        assert ours._compiled_with_maps(query)[3] == create_column_maps(theirs._compile(query)[2])
    # A statement kept for good, its values given per call: what databases makes of it bound.
    kept = sa.text("SELECT id FROM messages WHERE room_id = :room AND seq > :seq").bindparams(
        sa.bindparam("room", type_=sa.Integer), sa.bindparam("seq", type_=sa.Integer)
    )
    for values in ({"room": 1, "seq": 2}, {"room": 9, "seq": 0}):
        assert ours._static(kept, values)[:2] == theirs._compile(kept.bindparams(**values))[:2]
    # A LIMIT written into the SQL (`literal_execute`, db.rooms' list): its value there, per call.
    room = sa.bindparam("room", type_=sa.Integer)
    limited = sa.select(messages.c.id).where(messages.c.room_id == room)
    limited = limited.limit(sa.bindparam("limit", type_=sa.Integer, literal_execute=True))
    for limit in (30, 500, 30):
        sql, args = ours._static(limited, {"room": 4, "limit": limit})[:2]
        written = sa.select(messages.c.id).where(messages.c.room_id == 4).limit(sa.literal_column(str(limit)))
        assert (sql, args) == tuple(theirs._compile(written)[:2])
    # IN lists of any length, from one statement kept unexpanded, beside other parameters.
    for ids in ([3], [1, 2, 3], [5, 4], [1, 2, 3]):
        body = messages.c.body
        where = (messages.c.id.in_(ids), body != "x", body.like(sa.literal_column("'%x'")))
        query = sa.select(messages.c.id).where(*where).limit(len(ids))
        assert ours._compile(query)[:2] == theirs._compile(query)[:2], ids
        assert ours._compiled_with_maps(query)[3] == create_column_maps(theirs._compile(query)[2])


async def test_one_queue_for_several_channels_keeps_their_order() -> None:
    channels = broadcast.open_broadcast(None)
    await channels.connect()
    try:
        async with channels.subscribe_many("a", "b") as subscriber:
            for channel, message in [("a", "1"), ("b", "2"), ("a", "3")]:
                await channels.publish(channel, message)
            received = [await asyncio.wait_for(subscriber.get(), 2) for _ in range(3)]
        assert [(event.channel, event.message) for event in received] == [("a", "1"), ("b", "2"), ("a", "3")]
        assert channels.held == 0  # left behind nothing
    finally:
        await channels.disconnect()


LEAN_SCHEMA = """
enum Mood { HAPPY SAD }
type Item { id: ID! n: Int! label(upper: Boolean = false): String mood: Mood later: Int stars: Int! }
type Box { id: ID! item: Item! spare: Item }
type Query { items: [Item!]! maybe: [Item]! boxes: [Box!]! box: Box }
type Subscription { items: [Item!]! box: Box! }
"""


def lean_schema(later: Any = 7, infos: list | None = None) -> Any:
    """A schema whose `Item.later` answers `later(item)`: plain, raising, awaitable or refused;
    `Item.label` keeps in `infos` what its resolver was told."""
    from graphql import build_schema

    schema = build_schema(LEAN_SCHEMA)
    item = schema.type_map["Item"]

    def label(source: dict, info: Any, upper: bool = False) -> str:
        if infos is not None:
            infos.append(info._replace(path=info.path.as_list(), async_helpers=None))
        return source["label"].upper() if upper else source["label"]

    @reads("stars")
    def stars(source: dict, _info: Any) -> int:
        return source["stars"] if "stars" in source else len(source["label"])

    item.fields["label"].resolve = label
    item.fields["stars"].resolve = stars
    item.fields["later"].resolve = lambda source, _info: later(source) if callable(later) else later
    return schema


ITEMS = [{"id": i, "n": i * 2, "label": f"item {i}", "mood": "HAPPY" if i % 2 else None} for i in range(5)]


async def both(schema: Any, query: Any, root: Any, variables: dict | None = None) -> tuple[Any, Any, int]:
    """graphql-core's result, ours, and how many lists and objects took the short path (`query`
    as text or as a parsed document)."""
    from graphql import Executor, execute_root_selection_set, parse

    from execution.lean_executor import LeanExecutor

    results, lean = [], None
    document = parse(query) if isinstance(query, str) else query
    for kind in (Executor, LeanExecutor):
        executor = kind.build(schema, document, root_value=root, raw_variable_values=variables)
        result = execute_root_selection_set(executor)
        results.append(await result if asyncio.iscoroutine(result) else result)
        lean = executor
    assert isinstance(lean, LeanExecutor)
    theirs, ours = ({"data": r.data, "errors": [e.formatted for e in r.errors or ()]} for r in results)
    return theirs, ours, lean.flat_lists_completed + lean.objects_completed


async def test_flat_lists_take_the_short_path_and_answer_as_graphql_core_does() -> None:
    root = {"items": ITEMS, "maybe": [ITEMS[0], None, ITEMS[1]], "boxes": [{"id": 1, "item": ITEMS[0]}]}
    root["items"] = [{**item, "stars": 3} if item["id"] % 2 else item for item in ITEMS]  # read, or resolved
    query = "{ items { id n label shout: label(upper: true) mood later stars __typename } maybe { id } }"
    infos: list = []
    theirs, ours, short = await both(lean_schema(infos=infos), query, root)
    assert ours == theirs and not ours["errors"]
    # Every resolver is told what graphql-core tells it (the path as a list, the helpers aside).
    assert infos[:10] == infos[10:] and infos[3].path == ["items", 1, "shout"]
    assert ours["data"]["items"][1] == {
        "id": "1", "n": 2, "label": "item 1", "shout": "ITEM 1", "mood": "HAPPY", "later": 7, "stars": 3,
        "__typename": "Item",
    }  # fmt: skip
    assert ours["data"]["items"][2]["stars"] == len("item 2")
    assert ours["data"]["maybe"][1] is None
    assert short == 2  # graphql-core still completes lists where the short path takes over
    # A list of objects with objects in them: planned to every depth, the same answer.
    theirs, ours, short = await both(lean_schema(), "{ boxes { id item { id } } }", root)
    assert ours == theirs and ours["data"]["boxes"] == [{"id": "1", "item": {"id": "0"}}] and short == 1
    # Items that are mappings but not dicts (a database row as its driver made it) read the same.
    rows = {"items": [MappingProxyType(item) for item in root["items"]]}
    theirs, ours, short = await both(lean_schema(), query.replace(" maybe { id }", ""), rows)
    assert ours == theirs and not ours["errors"] and ours["data"]["items"][1]["stars"] == 3 and short == 1


async def test_objects_within_and_alone_take_the_short_path_and_answer_as_graphql_core_does() -> None:
    """An object's own objects are planned as its scalars are, in a list's items or in one
    object (a subscription's note and its room); anything not plain at any depth sends the whole
    list or object the usual way, with graphql-core's answer and errors."""

    async def awaited(item: dict) -> int:
        return item["n"] + 1

    def raises(item: dict) -> int:
        raise ValueError(f"no later for {item['id']}")

    boxes = [{"id": 1, "item": ITEMS[0], "spare": None}, {"id": 2, "item": ITEMS[1], "spare": ITEMS[2]}]
    root = {"boxes": boxes, "box": boxes[1]}
    query = "{ boxes { id item { id n mood } spare { id label(upper: true) later } } box { id spare { id later } } }"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a coroutine the short path made and dropped would warn
        # Planned: the list and the box; else each box's `item` alone (nothing in it awaits or raises).
        for later, expected_errors, expected_short in [(7, 0, 2), (awaited, 0, 2), (raises, 2, 2)]:
            theirs, ours, short = await both(lean_schema(later), query, root)
            assert ours == theirs and len(ours["errors"]) == expected_errors and short == expected_short, later
        gc.collect()
    assert not [warning for warning in caught if "never awaited" in str(warning.message)]
    assert ours["data"]["boxes"][1]["spare"] == {"id": "2", "label": "ITEM 2", "later": None}
    # Null in a non-null object field: graphql-core's error, bubbling as it does.
    root = {"boxes": [{"id": 1, "item": None}], "box": {"id": 2, "item": None}}
    theirs, ours, short = await both(lean_schema(), "{ boxes { id item { id } } box { id item { id } } }", root)
    assert ours == theirs and ours["data"] is None and ours["errors"][0]["path"] == ["boxes", 0, "item"]
    # An object that is not a mapping goes the usual way (graphql-core reads its attributes).
    root = {"box": MappingProxyType({"id": 3, "spare": SimpleNamespace(id=4, n=1)})}
    theirs, ours, short = await both(lean_schema(), "{ box { id spare { id n } } }", root)
    assert ours == theirs and ours["data"]["box"] == {"id": "3", "spare": {"id": "4", "n": 1}} and short == 0


NOTES_SCHEMA = """
scalar Stamp
enum Mood { HAPPY SAD }
type Who { id: ID! name: String! }
type Note { id: ID! at: Stamp! mood: Mood topic: String n: Int! by: Who }
type Query { notes: [Note!]! }
"""


async def test_items_read_by_key_at_every_depth_take_one_pass_and_answer_as_graphql_core_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where every field at every depth reads a key (an enum, a custom scalar, a null, an
    object and its own fields), each item is read in one pass (`_read`); an item with anything
    else in it (an Int out of range, an object that is not a mapping) sends the list the usual
    way: graphql-core's answer and errors, every time."""
    from datetime import UTC, datetime

    from graphql import build_schema

    schema = build_schema(NOTES_SCHEMA)
    schema.type_map["Stamp"].coerce_output_value = lambda value: value.isoformat()  # type: ignore[attr-defined]
    read_whole: list[str] = []
    original = lean_executor._read

    def counted(fields: Any, item: Any) -> Any:
        data = original(fields, item)
        if data is not None and "at" in data:
            read_whole.append(data["id"])
        return data

    monkeypatch.setattr(lean_executor, "_read", counted)
    at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    notes = [
        {"id": 2**40 + i, "at": at, "mood": "SAD" if i % 2 else None, "topic": None if i else "t", "n": i}
        | {"by": {"id": i, "name": f"who {i}"} if i % 3 else None}
        for i in range(6)
    ]
    query = "{ notes { id at mood topic n by { id name } } }"
    theirs, ours, short = await both(schema, query, {"notes": notes})
    assert ours == theirs and not ours["errors"] and short == 1
    assert read_whole == [str(2**40 + i) for i in range(6)]
    assert ours["data"]["notes"][1] == {
        "id": str(2**40 + 1), "at": at.isoformat(), "mood": "SAD", "topic": None, "n": 1,
        "by": {"id": "1", "name": "who 1"},
    }  # fmt: skip
    for odd in ({"n": 2**40}, {"by": SimpleNamespace(id=9, name="not a mapping")}, {"at": None}):
        read_whole.clear()
        theirs, ours, _ = await both(schema, query, {"notes": [*notes[:2], notes[2] | odd]})
        assert ours == theirs and read_whole == [str(2**40), str(2**40 + 1)], odd


async def test_a_plan_serves_every_execution_of_a_document_whatever_its_variables() -> None:
    """A flat list's plan is kept for the parsed document (as the parse cache keeps it), its
    arguments taken from each execution's variables; a selection a variable can change is not kept."""
    from graphql import parse

    from execution import lean_executor

    schema, root = lean_schema(), {"items": ITEMS}
    for query, variables in [
        ("query($u: Boolean) { items { id shout: label(upper: $u) n } }", [{"u": True}, {"u": False}, {}]),
        ("query($show: Boolean!) { items { id label @include(if: $show) } }", [{"show": True}, {"show": False}]),
    ]:
        document = parse(query)
        kept = len(lean_executor._static_plans)
        for values in variables:
            theirs, ours, short = await both(schema, document, root, values)
            assert ours == theirs and not ours["errors"] and short == 1, (query, values)
        assert len(lean_executor._static_plans) == kept + ("@include" not in query)
    upper = "query($u: Boolean) { items { shout: label(upper: $u) } }"
    _, ours, _ = await both(schema, parse(upper), root, {"u": True})
    assert ours["data"]["items"][1]["shout"] == "ITEM 1"


def test_what_the_built_in_scalars_return_as_it_is() -> None:
    """The short path skips the coercion of values the scalar would return unchanged."""
    from execution.lean_executor import COERCIONS, MAX_INT, MIN_INT, PASSES

    samples: dict[type, list[Any]] = {int: [0, -7, MIN_INT, MAX_INT], str: ["", "é"], bool: [True, False], float: [0.5]}
    for scalar, kind in PASSES.items():
        for value in samples[kind]:
            coerced = scalar.coerce_output_value(value)
            assert coerced == value and type(coerced) is kind, (scalar, value)
    with pytest.raises(GraphQLError):
        GraphQLInt.coerce_output_value(MAX_INT + 1)  # hence the range
    # Coercions taken instead of a scalar's own return what it does, and refuse what it refuses.
    for scalar, coerce in COERCIONS.items():
        for value in [0, 7, 2**40, -3, "7", "x", 7.0]:
            assert coerce(value) == scalar.coerce_output_value(value), (scalar, value)
        for refused in [True, 7.5, None, [1]]:
            with pytest.raises(GraphQLError):
                scalar.coerce_output_value(refused)
            with pytest.raises(GraphQLError):
                coerce(refused)


async def test_anything_but_plain_goes_the_usual_way_with_the_same_errors() -> None:
    async def awaited(item: dict) -> int:
        return item["n"] + 1

    def raises(item: dict) -> int:
        if item["id"] == 3:
            raise ValueError("no later for 3")
        return 1

    root = {"items": ITEMS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a coroutine the short path made and dropped would warn
        for later, expected_errors in [
            (awaited, 0),  # an awaitable: awaited the usual way
            (raises, 1),  # a resolver's error, at its path
            (lambda _item: "not a number", 5),  # a value the scalar refuses
            (lambda _item: None, 0),  # null where null is allowed
        ]:
            theirs, ours, short = await both(lean_schema(later), "{ items { id later } }", root)
            assert ours == theirs and len(ours["errors"]) == expected_errors, (later, ours)
            assert short == (1 if later is not awaited and expected_errors == 0 else 0)
        gc.collect()
    assert not [warning for warning in caught if "never awaited" in str(warning.message)]
    # Null for a non-null field: the error bubbles as graphql-core's does (here, to the root).
    root = {"items": [{**ITEMS[0], "n": None}]}
    theirs, ours, short = await both(lean_schema(), "{ items { id n } }", root)
    assert ours == theirs and ours["data"] is None and ours["errors"][0]["path"] == ["items", 0, "n"] and short == 0


async def test_a_list_read_by_keys_alone_answers_as_graphql_core_does_item_by_item() -> None:
    """Where every field reads a key (`rooms { id unreadCount }`), plain items take one loop and
    any other item the usual one, with graphql-core's answer for each."""
    from collections import defaultdict

    from execution.lean_executor import MAX_INT

    missing = defaultdict(lambda: 99, {"id": 5, "n": 10})  # `stars` missing: its resolver, not the default
    items: list[Any] = [
        {"id": 0, "n": 1, "stars": 4},  # plain: an int ID written as graphql-core writes it
        {"id": "x", "n": 2, "stars": 5},  # a str ID passes as it is
        {"id": 2, "n": 3, "label": "abc"},  # `stars` from its resolver
        {"id": 3, "n": True, "stars": 1},  # a bool where an Int is: graphql-core's coercion
        MappingProxyType({"id": 4, "n": 4, "stars": 2}),  # another mapping, read by key
        missing,
    ]
    missing["label"] = "xy"
    theirs, ours, short = await both(lean_schema(), "{ items { id n stars } }", {"items": items})
    assert ours == theirs and not ours["errors"] and short == 1
    assert ours["data"]["items"][:3] == [
        {"id": "0", "n": 1, "stars": 4}, {"id": "x", "n": 2, "stars": 5}, {"id": "2", "n": 3, "stars": 3},
    ]  # fmt: skip
    assert ours["data"]["items"][3]["n"] == 1 and ours["data"]["items"][5]["stars"] == 2
    assert "stars" not in missing  # read as the default resolver reads, without a default made
    # A value the scalar refuses (beyond 32 bits) is graphql-core's error at its path.
    items[1] = {"id": 1, "n": MAX_INT + 1, "stars": 5}
    theirs, ours, short = await both(lean_schema(), "{ items { id n stars } }", {"items": items})
    assert ours == theirs and ours["data"] is None and ours["errors"][0]["path"] == ["items", 1, "n"]


async def test_a_subscription_event_takes_the_short_path_and_answers_as_graphql_core_does() -> None:
    """An event whose root fields are planned is completed on the executor built for the
    subscription, without a copy: each resolver is told what graphql-core tells it (that event
    and that context, whatever the events before); anything not plain at any depth goes
    graphql-core's way, with its answer and errors."""
    from graphql import execute_subscription_event, parse

    from live.selection import Selection

    infos: list = []
    schema = lean_schema(infos=infos)

    def box(event: dict, _info: Any) -> Any:
        if event.get("raise"):
            raise ValueError("no box")
        return event["box"]

    schema.subscription_type.fields["box"].resolve = box
    query = "subscription { box { id item { id label } spare { id n later } } }"
    selection = Selection.of(parse(query), query, None, None)
    kept = selection._built(schema)
    assert not isinstance(kept, list)
    boxes = [{"id": 1, "item": ITEMS[1], "spare": None}, {"id": 2, "item": ITEMS[2], "spare": ITEMS[3]}]
    events: list[tuple[dict, bool]] = [
        ({"box": boxes[0]}, True),
        ({"box": boxes[1]}, True),
        ({"box": {**boxes[1], "spare": SimpleNamespace(id=3, n=1)}}, False),  # not a mapping
        ({"box": None}, False),  # null where null is not allowed: graphql-core's error
        ({"raise": True}, False),  # the root resolver's error
        ({"box": {**boxes[0], "item": {**ITEMS[4], "label": None}}}, True),  # null where allowed
    ]
    for number, (event, plain) in enumerate(events):
        context = {"number": number}
        del infos[:]
        planned = selection.planned(schema, event, context)
        ours = infos[:]
        del infos[:]
        executor = selection.executor_for(schema, event, context)
        assert not isinstance(executor, list)
        result = execute_subscription_event(executor)
        assert not asyncio.iscoroutine(result)
        assert (planned is not None) == plain, event
        if plain:
            assert planned == result.data and not result.errors and ours == infos
            assert [(info.root_value, info.context, info.path) for info in ours] == [
                (event, context, ["box", "item", "label"])
            ]
        else:
            assert result.errors or result.data["box"]["spare"] == {"id": "3", "n": 1, "later": 7}
    assert kept._root_plan[0] is not None and kept.events_planned == 3  # type: ignore[attr-defined]
    # Planned once, on a copy: the kept executor memoizes nothing of the events.
    assert len(kept._relevant_sub_fields) == len(kept._flat_lists) == 0  # type: ignore[attr-defined]


async def test_an_executor_copied_per_event_does_not_grow_with_events() -> None:
    """The live engine keeps one executor per selection for as long as anyone subscribes with it."""
    from graphql import execute_subscription_event, parse

    from live.selection import Selection

    query = "subscription { items { id n } }"
    selection = Selection.of(parse(query), query, None, None)
    schema = lean_schema()
    for n in range(20):
        copy = selection.executor_for(schema, {"items": [{"id": 1, "n": n}]}, None)
        assert not isinstance(copy, list)
        assert execute_subscription_event(copy).data == {"items": [{"id": "1", "n": n}]}
        assert copy.flat_lists_completed == 1  # type: ignore[attr-defined]
    kept = selection._executor
    assert kept is not None and len(kept._relevant_sub_fields) == len(kept._flat_lists) == 0  # type: ignore[attr-defined]
    # Its own shallow copy (LeanExecutor.__copy__) is the one the generic protocol makes.
    from copy import copy as shallow

    assert shallow(kept).__dict__ == object.__reduce_ex__(kept, 4)[2] == kept.__dict__ and shallow(kept) is not kept


async def test_rows_are_read_on_the_connection_databases_would_use() -> None:
    """`fetch_rows` reads on `databases`' own connection for the task, under its query lock,
    where the task has one; where it has none, straight on a pooled connection."""
    database = pool.ChatDatabase("postgresql://u@h/d")
    assert isinstance(database._backend, pool.BoundedWaitBackend)
    assert database._global_connection is None and len(database._connection_map) == 0
    connection = database.connection()
    assert database._connection_map[asyncio.current_task()] is connection  # type: ignore[index]
    assert isinstance(connection._connection, pool.BoundedWaitConnection)
    assert isinstance(connection._query_lock, asyncio.Lock)
    assert database.connection() is connection  # the same one for the task, as fetch_all's


class Named:
    """What graphql-core's default resolver reads of its resolve info."""

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name


def counting_tasks() -> list[asyncio.Task]:
    """The tasks the running loop creates from now on."""
    loop = asyncio.get_running_loop()
    created: list[asyncio.Task] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)
        return task

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    return created


async def test_the_pool_s_wait_is_bounded_and_a_read_takes_no_per_task_connection(database_url: str) -> None:
    """A connection is taken in the querying task, for a bounded time; given back by asyncpg (a
    transaction left open is rolled back). A read outside a transaction takes no `databases`
    Connection for its task."""
    database = pool.ChatDatabase(database_url, min_size=1, max_size=1, acquire_timeout=0.2)
    await database.connect()
    loop = asyncio.get_running_loop()
    try:
        backend = database._backend
        assert isinstance(backend, pool.BoundedWaitBackend) and backend._pool is not None
        asyncpg_pool_ = backend._pool
        created = counting_tasks()
        proxy = await pool._acquired(asyncpg_pool_, 1.0)
        assert created == []  # taken in this task
        await pool._released(asyncpg_pool_, proxy)

        proxy = await asyncpg_pool_.acquire()
        await proxy.execute("BEGIN")
        await pool._released(asyncpg_pool_, proxy)
        proxy = await asyncpg_pool_.acquire()
        assert not proxy.is_in_transaction()  # rolled back on the way
        # The pool's only connection out: the wait is bounded, and refused as the service being busy.
        with pytest.raises(ServiceUnavailable):
            await pool._acquired(asyncpg_pool_, 0.05)
        await pool._released(asyncpg_pool_, proxy)

        # A read outside a transaction: one query on a pooled connection, no per-task Connection.
        rows = await pool.fetch_rows(database, sa.select(sa.literal_column("1").label("one")))
        assert rows == [{"one": 1}] and len(database._connection_map) == 0
        # A kept statement, its values given per call; rows left as asyncpg made them, read as mappings.
        kept = sa.text("SELECT :n + 1 AS next, 'x' AS name").bindparams(sa.bindparam("n", type_=sa.Integer))
        for n in (1, 5):
            (view,) = await pool.fetch_views(database, kept, {"n": n})
            assert (
                isinstance(view, ReadOnlyRow)
                and isinstance(view, Mapping)
                and dict(view) == {"next": n + 1, "name": "x"}
            )
            assert "next" in view and view.get("name") == "x" and default_field_resolver(view, Named("next")) == n + 1
        # Inside one: on the transaction's connection (it sees what the transaction wrote).
        async with database.transaction():
            await database.execute(sa.text("CREATE TEMPORARY TABLE seen_here (n int)"))
            await database.execute(sa.text("INSERT INTO seen_here VALUES (7)"))
            assert await pool.fetch_rows(database, sa.text("SELECT n FROM seen_here")) == [{"n": 7}]
            seen = sa.text("SELECT n FROM seen_here WHERE n = :n").bindparams(sa.bindparam("n", type_=sa.Integer))
            assert [dict(row) for row in await pool.fetch_views(database, seen, {"n": 7})] == [{"n": 7}]
    finally:
        loop.set_task_factory(None)
        await database.disconnect()


@pytest.mark.parametrize("where", ["postgres", "sqlite"])
async def test_a_kept_statement_takes_lists_of_any_length(where: str, database_url: str, tmp_path: Any) -> None:
    """A batched read's statement is built once and its `IN` lists given per call: on Postgres
    expanded from the statement compiled once (SQLAlchemy's expanded state), on SQLite bound for
    `databases` to compile (not `.params()`, whose values SQLAlchemy 2.1 keeps apart)."""
    url = database_url if where == "postgres" else f"sqlite:///{tmp_path / 'kept.db'}"
    database = pool.ChatDatabase(url) if where == "postgres" else Database(url)
    await database.connect()
    try:
        numbers = sa.text("SELECT 1 AS n UNION SELECT 2 UNION SELECT 3 UNION SELECT 4").columns(n=sa.Integer).subquery()
        kept = sa.select(numbers.c.n).where(numbers.c.n.in_(sa.bindparam("ns", expanding=True))).order_by(numbers.c.n)
        for ns in ([2], [4, 1, 3], [], [5]):
            assert await pool.fetch_rows(database, kept, {"ns": ns}) == [{"n": n} for n in sorted(ns) if n <= 4]
        both = sa.select(numbers.c.n).where(
            numbers.c.n.in_(sa.bindparam("low", expanding=True)) | numbers.c.n.in_(sa.bindparam("high", expanding=True))
        )
        found = await pool.fetch_rows(database, both, {"low": [1], "high": [3, 4]})
        assert sorted(row["n"] for row in found) == [1, 3, 4]
        async with database.transaction():  # on the transaction's connection, the same
            assert await pool.fetch_rows(database, kept, {"ns": [3]}) == [{"n": 3}]
    finally:
        await database.disconnect()


# Guards of the reaches that were not declared before core/reaches.py listed them.


def test_the_access_line_s_arguments_are_what_the_log_filter_strips() -> None:
    """uvicorn logs each response as (client, method, path with its query, http version,
    status); logs.StripQueryString drops the query (tokens travel there on GET)."""
    import logging

    heard: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            heard.append(record)

    async def app(_scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    access = logging.getLogger("uvicorn.access")
    handler, level = Keep(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:

        async def served() -> None:
            config = Config(app=app, http=DrainingHttpProtocol, lifespan="off", log_config=None, access_log=True)
            config.load()
            protocol = DrainingHttpProtocol(config=config, server_state=ServerState(), app_state={})
            protocol.connection_made(Transport())
            protocol.data_received(b"GET /graphql?token=secret&x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(20):
                await asyncio.sleep(0)

        asyncio.run(served())
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    (record,) = heard
    assert isinstance(record.args, tuple) and len(record.args) == 5
    assert record.args[1:] == ("GET", "/graphql?token=secret&x=1", "1.1", 200)
    assert logs.StripQueryString().filter(record) and "secret" not in record.getMessage()
    assert "/graphql?…" in record.getMessage()


def test_the_worker_serves_as_uvicorn_worker_does_with_the_draining_server() -> None:
    """ChatWorker._serve is UvicornWorker._serve with DrainingServer for Server, step for step."""
    import ast
    import inspect
    import textwrap

    from uvicorn_worker import UvicornWorker

    def body(function: Any, server: str) -> str:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        definition = tree.body[0]
        assert isinstance(definition, ast.AsyncFunctionDef)
        definition.body = [statement for statement in definition.body if not isinstance(statement, ast.Expr)
                           or not isinstance(statement.value, ast.Constant)]  # fmt: skip
        return ast.dump(definition).replace(f"id='{server}'", "id='SERVER'")

    assert body(worker.ChatWorker._serve, "DrainingServer") == body(UvicornWorker._serve, "Server")


async def test_a_read_only_row_reads_as_a_mapping_by_key_only(database_url: str) -> None:
    """asyncpg makes rows of a Record subclass we name; registered as a Mapping, it is read by
    key as a dict is. Iterating it yields its values: that must stay what nothing relies on."""
    import asyncpg

    connection = await asyncpg.connect(database_url.replace("postgresql://", "postgres://", 1))
    try:
        (row,) = await connection.fetch("SELECT 1 AS a, 'x' AS b", record_class=ReadOnlyRow)
    finally:
        await connection.close()
    assert type(row) is ReadOnlyRow and isinstance(row, Mapping)
    assert row["a"] == 1 and row.get("b") == "x" and row.get("missing") is None and row.get("missing", 5) == 5
    assert "a" in row and "x" not in row and len(row) == 2
    assert list(row.keys()) == ["a", "b"] and list(row.items()) == [("a", 1), ("b", "x")]
    assert dict(row) == {"a": 1, "b": "x"}  # dict() reads keys() where there is one
    assert list(row) == [1, "x"]  # values, not keys: Mapping's own methods would be wrong on it
    assert default_field_resolver(row, Named("b")) == "x"


async def test_asyncpg_s_messages_for_a_closed_connection_are_what_outages_recognise(database_url: str) -> None:
    """asyncpg has no type for a connection gone: outages reads its InterfaceError's text."""
    import asyncpg
    from asyncpg import exceptions as pg

    url = database_url.replace("postgresql://", "postgres://", 1)
    closed = await asyncpg.connect(url)
    await closed.close()
    with pytest.raises(pg.InterfaceError) as raised:
        await closed.fetch("SELECT 1")
    assert outages.is_database_unavailable(raised.value)
    assert not outages.is_database_unavailable(pg.InterfaceError("cannot call Connection.fetch(): misuse"))
    # The server ends a connection: what the next two queries on it raise are outages.
    victim, killer = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
        for _ in range(2):
            with pytest.raises(Exception) as raised_again:
                await victim.fetch("SELECT 1")
            assert outages.is_database_unavailable(raised_again.value), raised_again.value
    finally:
        await killer.close()
        victim.terminate()
    # The protocol's refusal while it waits for a ReadyForQuery, and the pool's logger.
    import asyncpg.pool
    import asyncpg.protocol

    protocol_source = ROOT.joinpath(asyncpg.protocol.__path__[0], "coreproto.pyx").read_text()
    assert "'cannot switch to state {}; '" in protocol_source
    assert asyncpg.pool.logger.name == "asyncpg.pool"


def test_graphql_core_hands_a_source_back_untouched() -> None:
    """A source resolver's LiveSource comes back from create_source_event_stream as it is: the
    transports take it from there and hand it to the live engine."""
    from graphql import Executor, build_schema, parse
    from graphql.execution import create_source_event_stream

    from identity.auth import Viewer
    from live.source import LiveSource

    async def allowed() -> None:
        return None

    live = LiveSource(topic="t", viewer=Viewer(user={"id": 1}, token_hash="h"), check=allowed)
    schema = build_schema("type Query { a: Int } type Subscription { live: Int }")
    schema.subscription_type.fields["live"].subscribe = lambda _root, _info: live  # type: ignore[union-attr]
    executor = Executor.build(schema, parse("subscription { live }"))
    assert not isinstance(executor, list)
    assert create_source_event_stream(executor) is live
    with pytest.raises(TypeError):
        aiter(live)


def test_graphql_core_s_request_errors_read_as_the_codes_we_give() -> None:
    """graphql-core gives request errors no code: errors.py reads their texts."""
    from graphql import Executor, GraphQLSyntaxError, build_schema, execute_sync, parse, validate

    with pytest.raises(GraphQLSyntaxError) as syntax:
        parse("{ me { id ")
    assert errors.code_for_request_error(syntax.value) == "GRAPHQL_PARSE_FAILED"
    schema = build_schema("type Query { a(n: Int!): Int }")
    document = parse("query($n: Int!) { a(n: $n) }")
    for variables in ({}, {"n": "x"}, {"n": None}):
        refused = Executor.build(schema, document, raw_variable_values=variables)
        assert isinstance(refused, list) and refused, variables
        assert [errors.code_for_request_error(error) for error in refused] == ["BAD_USER_INPUT"], refused
    # A variable missing inside a list, read past validation: graphql-core's words for it.
    listed = build_schema("type Query { a(n: [Int!]!): Int }")
    result = execute_sync(listed, parse("query($v: Int) { a(n: [$v]) }"), variable_values={})
    (missing,) = result.errors or ()
    assert errors.code_for_request_error(missing) == "BAD_USER_INPUT", missing.message
    (invalid,) = validate(schema, parse("{ b }"))
    assert errors.code_for_request_error(invalid) == "GRAPHQL_VALIDATION_FAILED"
