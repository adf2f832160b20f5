"""Each wire protocol's state machine, driven in-process with in-memory fakes (tests/support/fakes):
one fast test per rule, beside the end-to-end tests that run the same rules through gunicorn,
Postgres and Redis. A barrier stands for every wait: a frame the protocol answers with (a pong
after a ping), the fake engine's admission of a subscription, or the close itself."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.websockets import WebSocket

from tests.support.fakes import (
    HELLO,
    TICKS,
    UNAVAILABLE,
    FakeEngine,
    FakeHTTPClient,
    FakeQuota,
    FakeSubscription,
    FakeWebSocketClient,
    live_server,
    viewer_of,
)
from transports import multipart, sse
from transports.http_streams import StreamEndpoint
from transports.keepalive import Keepalive
from transports.legacy_ws import LegacyWSConnection
from transports.media import Streamed
from transports.operations import LiveServer
from transports.transport_ws import TransportWSConnection
from transports.websocket import WebSocketEndpoint

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = (TRANSPORT_WS, LEGACY_WS)
START = {TRANSPORT_WS: "subscribe", LEGACY_WS: "start"}
STOP = {TRANSPORT_WS: "complete", LEGACY_WS: "stop"}
RESULT = {TRANSPORT_WS: "next", LEGACY_WS: "data"}
TICK = b'{"data":{"ticks":"a"}}'


class Session:
    """One connection of a protocol, served in a task, and the client end of it."""

    def __init__(self, server: LiveServer, protocol: str, stalled: bool = False) -> None:
        self.protocol = protocol
        self.client = FakeWebSocketClient([protocol], stalled)
        websocket = WebSocket(self.client.scope, self.client.receive, self.client.asgi_send)
        kind = TransportWSConnection if protocol == TRANSPORT_WS else LegacyWSConnection
        self.connection = kind(server, websocket, self.client.writer)
        self.task = asyncio.create_task(self.connection.serve())

    async def init(self, token: str = "alice-token") -> None:
        self.client.send({"type": "connection_init", "payload": {"token": token}})
        assert await self.client.next() == {"type": "connection_ack"}
        if self.protocol == LEGACY_WS:
            assert await self.client.next() == {"type": "ka"}

    def start(self, operation_id: str, query: str = TICKS) -> None:
        self.client.send({"type": START[self.protocol], "id": operation_id, "payload": {"query": query}})

    async def subscribed(self, engine: FakeEngine, operation_id: str) -> FakeSubscription:
        self.start(operation_id)
        return await engine.next_subscription()

    async def handled(self) -> None:
        """Returns once every message sent before is handled: the protocol answers a ping with a
        pong in order (the legacy protocol has no ping: a second connection_init's ack)."""
        if self.protocol == TRANSPORT_WS:
            self.client.send({"type": "ping"})
            assert await self.client.next() == {"type": "pong"}
        else:
            await self.init()

    async def closed(self) -> tuple[int, str]:
        close = await self.client.closed()
        await asyncio.wait_for(self.task, 2)
        return close

    async def end(self) -> None:
        self.client.disconnect()
        await asyncio.wait_for(self.task, 2)


@pytest.fixture
def served() -> tuple[LiveServer, FakeEngine]:
    return live_server()


# Both protocols: the connection and its init.


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_no_connection_init_in_time_closes_with_4408(protocol: str) -> None:
    server, _ = live_server(init_timeout=0.01)
    session = Session(server, protocol)
    assert await session.closed() == (4408, "Connection initialisation timeout")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_init_timer_runs_for_init_timeout_and_stops_at_connection_init(protocol: str) -> None:
    server, _ = live_server(init_timeout=7)
    session = Session(server, protocol)
    await session.client.accepted_event.wait()  # the timer is set as the accept returns
    timer = session.connection.init_deadline.timer
    assert timer is not None
    assert 6 < timer.when() - asyncio.get_running_loop().time() <= 7
    await session.init()
    assert timer.cancelled() and session.connection.init_deadline.timer is None
    session.connection.init_deadline.expired()  # as the timer would, had it not been stopped
    await session.handled()
    await session.end()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_before_the_ack_closes_with_4401(protocol: str, served: Any) -> None:
    session = Session(served[0], protocol)
    session.start("1")
    assert await session.closed() == (4401, "Unauthorized")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("text", ["not json", "[1]", '{"type": 1}'])
async def test_an_invalid_message_closes_with_4400(protocol: str, text: str, served: Any) -> None:
    session = Session(served[0], protocol)
    session.client.send(text)
    assert await session.closed() == (4400, "Invalid message received")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unknown_message_type_closes_with_4400(protocol: str, served: Any) -> None:
    session = Session(served[0], protocol)
    await session.init()
    session.client.send({"type": "shout"})
    assert await session.closed() == (4400, "Unexpected message of type shout")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_id_over_128_bytes_closes_with_4400(protocol: str, served: Any) -> None:
    server, engine = served
    session = Session(server, protocol)
    await session.init()
    await session.subscribed(engine, "é" * 64)  # 128 bytes in UTF-8: taken
    session.start("é" * 65)
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    assert await session.closed() == (4400, f"Invalid {kind} message")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_client_that_stops_reading_is_closed_with_1013(protocol: str, served: Any) -> None:
    server, engine = served  # send_queue 8
    session = Session(server, protocol)
    await session.init()
    subscription = await session.subscribed(engine, "1")
    session.client.stalled = True
    for _ in range(server.send_queue + 1):  # the first is being written, `send_queue` wait
        subscription.sink.send(TICK, None)
    assert await session.closed() == (1013, "Slow consumer")
    assert subscription.closed  # the cleanup stops every operation


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stopping_an_operation_stops_its_delivery_and_frees_its_id(protocol: str, served: Any) -> None:
    server, engine = served
    session = Session(server, protocol)
    await session.init()
    subscription = await session.subscribed(engine, "1")
    subscription.sink.send(TICK, None)
    assert await session.client.next() == {"type": RESULT[protocol], "id": "1", "payload": {"data": {"ticks": "a"}}}
    session.client.send({"type": STOP[protocol], "id": "1"})
    await session.handled()
    assert subscription.closed
    again = await session.subscribed(engine, "1")  # the id is free again: no 4409
    assert not again.closed
    await session.end()
    assert again.closed


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_that_ends_sends_its_last_result_then_complete(protocol: str, served: Any) -> None:
    server, engine = served
    session = Session(server, protocol)
    await session.init()
    subscription = await session.subscribed(engine, "1")
    subscription.sink.end(b'{"errors":[{"message":"gone"}]}')
    assert await session.client.next() == {
        "type": RESULT[protocol],
        "id": "1",
        "payload": {"errors": [{"message": "gone"}]},
    }
    assert await session.client.next() == {"type": "complete", "id": "1"}
    await session.subscribed(engine, "1")  # its id is free
    await session.end()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_query_answers_with_its_result_then_complete(protocol: str, served: Any) -> None:
    session = Session(served[0], protocol)
    await session.init()
    session.start("q", HELLO)
    assert await session.client.next() == {"type": RESULT[protocol], "id": "q", "payload": {"data": {"hello": "world"}}}
    assert await session.client.next() == {"type": "complete", "id": "q"}
    await session.end()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_refusals_are_framed_by_the_protocol(protocol: str, served: Any) -> None:
    server, engine = served  # max_subscriptions 3
    session = Session(server, protocol)
    await session.init()
    session.start("bad", "{ nope }")
    for operation_id in ("1", "2", "3"):
        await session.subscribed(engine, operation_id)
    session.start("4")
    refusals = [await session.client.next() for _ in range(2 if protocol == TRANSPORT_WS else 4)]
    if protocol == TRANSPORT_WS:
        assert [(frame["type"], frame["id"]) for frame in refusals] == [("error", "bad"), ("error", "4")]
        errors = [frame["payload"] for frame in refusals]
    else:  # as subscriptions-transport-ws's server refuses: errors as a result, then complete
        assert [(frame["type"], frame["id"]) for frame in refusals] == [
            ("data", "bad"),
            ("complete", "bad"),
            ("data", "4"),
            ("complete", "4"),
        ]
        errors = [refusals[0]["payload"]["errors"], refusals[2]["payload"]["errors"]]
    assert "nope" in errors[0][0]["message"]
    assert errors[1] == [
        {"message": "At most 3 subscriptions per connection.", "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS"}}
    ]
    await session.end()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_init_when_the_database_is_away_closes_with_1013(protocol: str, served: Any) -> None:
    session = Session(served[0], protocol)
    session.client.send({"type": "connection_init", "payload": {"token": UNAVAILABLE}})
    assert await session.closed() == (1013, "Try again later")
    assert session.client.pending() == []  # no connection_error: the client should simply retry


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_connection_slot_is_taken_at_init_and_given_back_at_close(protocol: str) -> None:
    quota = FakeQuota(connections=1, subscriptions=10)
    server, engine = live_server(quota=quota)
    first = Session(server, protocol)
    await first.init()
    assert quota.held == {("connections", 1): 1}
    await first.subscribed(engine, "1")
    assert quota.held == {("connections", 1): 1, ("subscriptions", 1): 1}  # no second connection slot
    second = Session(server, protocol)
    second.client.send({"type": "connection_init", "payload": {"token": "alice-token"}})
    if protocol == LEGACY_WS:
        assert await second.client.next() == {
            "type": "connection_error",
            "payload": {
                "message": "At most 1 live connections and streams per user at once.",
                "extensions": {"code": "TOO_MANY_CONNECTIONS"},
            },
        }
    assert await second.closed() == (1008, "TOO_MANY_CONNECTIONS: at most 1 per user")
    await first.end()
    assert quota.held == {("connections", 1): 0, ("subscriptions", 1): 0}


# graphql-transport-ws only.


async def test_transport_ws_a_second_connection_init_closes_with_4429(served: Any) -> None:
    session = Session(served[0], TRANSPORT_WS)
    await session.init()
    session.client.send({"type": "connection_init", "payload": {"token": "alice-token"}})
    assert await session.closed() == (4429, "Too many initialisation requests")


async def test_transport_ws_a_running_id_again_closes_with_4409(served: Any) -> None:
    server, engine = served
    session = Session(server, TRANSPORT_WS)
    await session.init()
    await session.subscribed(engine, "1")
    session.start("1")
    assert await session.closed() == (4409, "Subscriber for 1 already exists")


async def test_transport_ws_without_a_valid_token_closes_with_4403(served: Any) -> None:
    session = Session(served[0], TRANSPORT_WS)
    session.client.send({"type": "connection_init", "payload": {"token": "forged"}})
    assert await session.closed() == (4403, "Forbidden")


async def test_transport_ws_answers_ping_with_pong_and_pings_on_the_keepalive_interval() -> None:
    server, _ = live_server(keepalive=Keepalive(0.01))
    session = Session(server, TRANSPORT_WS)
    await session.handled()  # ping -> pong before the ack too
    await session.init()
    assert await session.client.next() == {"type": "ping"}
    await session.end()


# graphql-ws (legacy) only.


async def test_legacy_without_a_valid_token_sends_connection_error_then_closes_with_4403(served: Any) -> None:
    session = Session(served[0], LEGACY_WS)
    session.client.send({"type": "connection_init", "payload": {"token": "forged"}})
    assert await session.client.next() == {
        "type": "connection_error",
        "payload": {"message": "A valid token is required.", "extensions": {"code": "UNAUTHENTICATED"}},
    }
    assert await session.closed() == (4403, "Forbidden")


async def test_legacy_a_second_connection_init_is_acknowledged_again(served: Any) -> None:
    session = Session(served[0], LEGACY_WS)
    await session.init()
    await session.init()  # ack and ka again, no close
    await session.end()


async def test_legacy_a_running_id_again_replaces_the_operation(served: Any) -> None:
    server, engine = served
    session = Session(server, LEGACY_WS)
    await session.init()
    first = await session.subscribed(engine, "1")
    second = await session.subscribed(engine, "1")
    assert first.closed and not second.closed
    await session.end()


async def test_legacy_sends_ka_on_the_keepalive_interval() -> None:
    server, _ = live_server(keepalive=Keepalive(0.01))
    session = Session(server, LEGACY_WS)
    await session.init()  # ack, then a first ka at once
    assert await session.client.next() == {"type": "ka"}  # then on the interval
    await session.end()


async def test_legacy_connection_terminate_closes_with_1000(served: Any) -> None:
    session = Session(served[0], LEGACY_WS)
    await session.init()
    session.client.send({"type": "connection_terminate"})
    assert await session.closed() == (1000, "Terminated")


# The endpoint: the offered subprotocol picks the protocol.


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [([LEGACY_WS, TRANSPORT_WS], TRANSPORT_WS), ([LEGACY_WS], LEGACY_WS), (["graphql-sse"], None)],
)
async def test_the_endpoint_prefers_graphql_transport_ws_and_refuses_what_it_does_not_speak(
    offered: list[str], chosen: str | None, served: Any
) -> None:
    client = FakeWebSocketClient(offered)
    task = asyncio.create_task(WebSocketEndpoint(served[0])(client.scope, client.receive, client.asgi_send))
    if chosen is None:
        await asyncio.wait_for(task, 2)
        assert client.accepted is None and client.pending() == [{"close": 1002}]
        return
    client.send({"type": "connection_init", "payload": {"token": "alice-token"}})
    assert await client.next() == {"type": "connection_ack"}
    assert client.accepted == chosen
    client.disconnect()
    await asyncio.wait_for(task, 2)


# The streamed protocols.


async def serve_stream(
    protocol: Any, server: LiveServer, query: str, token: str | None = "alice-token"
) -> tuple[FakeHTTPClient, asyncio.Task[None]]:
    client = FakeHTTPClient()
    request = server.operations.prepare({"query": query})
    viewer = viewer_of(1) if token else None
    context = server.context(viewer, None, None)
    task = asyncio.create_task(
        protocol.serve(server, Keepalive(60), client.scope, client.receive, client.asgi_send, request, viewer, context)
    )
    return client, task


async def test_sse_frames_results_with_their_event_id_then_complete(served: Any) -> None:
    server, engine = served
    client, task = await serve_stream(sse, server, TICKS)
    subscription = await engine.next_subscription()
    assert client.start is not None and client.start["status"] == 200
    assert dict(client.start["headers"])[b"content-type"] == b"text/event-stream; charset=utf-8"
    subscription.sink.send(TICK, "7")
    subscription.sink.end(TICK)
    await asyncio.wait_for(client.ended.wait(), 2)
    await asyncio.wait_for(task, 2)
    assert client.body == (
        b":\n\n"
        b'id: 7\nevent: next\ndata: {"data":{"ticks":"a"}}\n\n'
        b'event: next\ndata: {"data":{"ticks":"a"}}\n\n'
        b"event: complete\ndata: \n\n"
    )


async def test_sse_refusal_is_a_result_with_errors_then_complete(served: Any) -> None:
    client, task = await serve_stream(sse, served[0], TICKS, token=None)
    await asyncio.wait_for(task, 2)
    head, refusal, end = client.body.split(b"\n\n", 2)
    assert head == b":"
    assert refusal.startswith(b"event: next\ndata: ")
    assert json.loads(refusal.removeprefix(b"event: next\ndata: "))["errors"][0]["extensions"] == {
        "code": "UNAUTHENTICATED"
    }
    assert end == b"event: complete\ndata: \n\n"


async def test_sse_that_cannot_be_served_now_ends_without_complete(served: Any) -> None:
    server, engine = served
    client, task = await serve_stream(sse, server, TICKS)
    subscription = await engine.next_subscription()
    subscription.sink.try_again_later()
    await asyncio.wait_for(task, 2)
    assert client.ended.is_set() and b"event: complete" not in client.body  # an EventSource reconnects
    assert subscription.closed


async def test_multipart_frames_results_as_parts_then_the_closing_delimiter(served: Any) -> None:
    server, engine = served
    client, task = await serve_stream(multipart, server, TICKS)
    subscription = await engine.next_subscription()
    subscription.sink.send(TICK, "7")
    subscription.sink.end(TICK)
    await asyncio.wait_for(task, 2)
    part = b"\r\ncontent-type: application/json; charset=utf-8\r\n\r\n"
    result = part + b'{"payload":{"data":{"ticks":"a"}}}\r\n--graphql'
    assert client.body == b"\r\n--graphql" + part + b"{}\r\n--graphql" + result + result + b"--\r\n"


async def test_multipart_that_cannot_be_served_now_says_so_then_ends(served: Any) -> None:
    server, engine = served
    client, task = await serve_stream(multipart, server, TICKS)
    subscription = await engine.next_subscription()
    subscription.sink.try_again_later()
    await asyncio.wait_for(task, 2)
    last_part = client.body.split(b"\r\n\r\n")[-1]
    assert last_part.endswith(b"\r\n--graphql--\r\n")
    assert json.loads(last_part.split(b"\r\n")[0]) == {
        "payload": None,
        "errors": [
            {
                "message": "The server cannot serve this now; try again shortly.",
                "extensions": {"code": "SERVICE_UNAVAILABLE"},
            }
        ],
    }


@pytest.mark.parametrize("kind", [Streamed.SSE, Streamed.MULTIPART])
async def test_a_stream_whose_viewer_cannot_be_told_now_is_retried(kind: Streamed, served: Any) -> None:
    server, _ = served
    client = FakeHTTPClient([(b"authorization", f"Bearer {UNAVAILABLE}".encode())])
    request = server.operations.prepare({"query": TICKS})
    await asyncio.wait_for(
        StreamEndpoint(server, 60, 60)(client.scope, client.receive, client.asgi_send, request, kind), 2
    )
    assert client.start is not None
    if kind is Streamed.SSE:  # an EventSource gives up on anything but 200: a stream that ends at once
        assert client.start["status"] == 200 and client.ended.is_set() and b"event:" not in client.body
    else:
        assert client.start["status"] == 503 and (b"retry-after", b"2") in client.start["headers"]
        assert json.loads(client.body)["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
