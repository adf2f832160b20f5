"""WebSocket limits: a cap on subscriptions per connection, a maximum frame size, and slow
consumers disconnected instead of growing the server's memory or stalling their room."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.graphql import GraphQLClient, create_room, join_room, post_many, post_message, sign_up
from tests.support.processes import SHARED_REDIS_URL, Server

SUBSCRIPTION = "subscription($r: ID!) { messageCreated(room: $r) { id seq body } }"


@pytest.fixture(scope="module")
def tight(database_url: str) -> Iterator[Server]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "WS_MAX_SUBSCRIPTIONS": "3",
        "WS_MAX_SIZE": "4096",
        "WS_SEND_QUEUE": "16",
    }
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


async def open_ws(server: Server, token: str, protocol: str, sock: socket.socket | None = None) -> ClientConnection:
    ws = await connect(server.ws_url, subprotocols=[protocol], sock=sock, max_size=None)  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    return ws


async def ponged(ws: ClientConnection) -> None:
    """graphql-transport-ws's barrier (as GraphQLWebSocket.barrier): a ping answered by pong
    proves the server handled, so started, every subscribe sent before it. Nothing else is
    expected before the pong."""
    await ws.send(json.dumps({"type": "ping"}))
    while (message := json.loads(await asyncio.wait_for(ws.recv(), 5)))["type"] != "pong":
        assert message["type"] == "ping", message


async def next_message(ws: ClientConnection) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message["type"] not in ("ka", "ping", "pong"):
            return message


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_subscriptions_per_connection_are_capped(tight: Server, protocol: str) -> None:
    client = GraphQLClient(tight.url)
    alice = sign_up(client, "Alice")
    room = create_room(client, alice)
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    ws = await open_ws(tight, alice.token, protocol)
    for op in ("1", "2", "3", "4"):
        payload = {"query": SUBSCRIPTION, "variables": {"r": room}}
        await ws.send(json.dumps({"id": op, "type": start, "payload": payload}))
    refused = await next_message(ws)
    assert refused["id"] == "4"
    if protocol == "graphql-transport-ws":
        assert refused["type"] == "error"
        errors = refused["payload"]
    else:  # as subscriptions-transport-ws's server refuses: errors as a result, then complete
        assert refused["type"] == "data"
        errors = refused["payload"]["errors"]
        assert await next_message(ws) == {"type": "complete", "id": "4"}
    assert errors[0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
    post_message(client, alice, room, "still served")
    delivered = {(await next_message(ws))["id"] for _ in range(3)}
    assert delivered == {"1", "2", "3"}
    await ws.close()


async def test_oversized_frames_close_the_connection_with_1009(tight: Server) -> None:
    client = GraphQLClient(tight.url)
    alice = sign_up(client, "Alice")
    ws = await open_ws(tight, alice.token, "graphql-transport-ws")
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ me { id } }" + " " * 5000}}))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert httpx.get(f"{tight.url}/healthz").status_code == 200


async def test_a_slow_consumer_is_disconnected_and_does_not_stall_its_room(tight: Server) -> None:
    client = GraphQLClient(tight.url)
    alice, bob = sign_up(client, "Alice"), sign_up(client, "Bob")
    room = create_room(client, alice)
    join_room(client, bob, room)
    fast = await open_ws(tight, alice.token, "graphql-transport-ws")
    await fast.send(
        json.dumps({"id": "f", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": {"r": room}}})
    )
    # The slow client's kernel buffer is tiny and it never reads: the server's send queue fills.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", tight.port))
    slow = await open_ws(tight, bob.token, "graphql-transport-ws", sock=sock)
    await slow.send(
        json.dumps({"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": {"r": room}}})
    )
    await ponged(fast)
    await ponged(slow)
    slow.transport.pause_reading()  # stop reading, like a stalled browser tab

    # More than the kernel buffers between server and client hold (4 MiB send buffer at most here).
    body = "x" * 3900
    count = 1500
    started = time.monotonic()
    seqs: list[int] = []

    async def read_fast() -> None:
        while len(seqs) < count:
            seqs.append((await next_message(fast))["payload"]["data"]["messageCreated"]["seq"])

    reader = asyncio.create_task(read_fast())
    await post_many(tight.url, alice.token, room, [f"{i} {body}" for i in range(count)])
    await asyncio.wait_for(reader, 60)
    assert seqs == list(range(1, count + 1))  # the fast subscriber got everything, in order
    assert time.monotonic() - started < 90

    log_deadline = time.monotonic() + 10
    while "slow consumer" not in tight.log().lower() and time.monotonic() < log_deadline:
        await asyncio.sleep(0.05)
    assert "slow consumer" in tight.log().lower()
    slow.transport.resume_reading()
    code = None
    try:
        for _ in range(count + 10):
            await asyncio.wait_for(slow.recv(), 10)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
    assert code == 1013
    await fast.close()
