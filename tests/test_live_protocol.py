"""The WebSocket protocols' rules: subprotocol choice, authentication at connection_init, the
close codes of graphql-transport-ws, keepalives, and legacy graphql-ws stop/replace."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.graphql import GraphQLClient, create_room, post_message, sign_up
from tests.support.processes import SHARED_REDIS_URL, Server
from tests.support.rawws import client_frame, upgrade_request
from tests.support.wsclient import LEGACY_WS, MESSAGE_CREATED, PROTOCOLS, TRANSPORT_WS, GraphQLWebSocket


@pytest.fixture(scope="module")
def brisk(database_url: str) -> Iterator[Server]:
    """A server with a one-second keepalive and connection_init timeout."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "WS_KEEPALIVE_SECONDS": "1",
        "WS_INIT_TIMEOUT_SECONDS": "1",
    }
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


def healthy(server: Server) -> bool:
    return httpx.post(f"{server.url}/graphql", json={"query": "{ me { id } }"}).json() == {"data": {"me": None}}


@pytest.mark.parametrize("subprotocols", [[], ["graphql-sse"], ["mqtt", "chat"]])
async def test_a_connection_offering_neither_protocol_is_refused(server: Server, subprotocols: list[str]) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.ws_url, subprotocols=subprotocols or None)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert healthy(server)


async def test_graphql_transport_ws_is_preferred_when_both_are_offered(server: Server) -> None:
    ws = await connect(server.ws_url, subprotocols=[LEGACY_WS, TRANSPORT_WS])  # type: ignore[list-item]
    assert ws.subprotocol == TRANSPORT_WS
    await ws.close()


@pytest.mark.parametrize(
    "payload_of",
    [
        lambda t: {"authorization": f"Bearer {t}"},
        lambda t: {"Authorization": f"Bearer {t}"},
        lambda t: {"authorization": t},
        lambda t: {"Authorization": t},
        lambda t: {"authToken": t},
        lambda t: {"token": t},
        lambda t: {"headers": {"Authorization": f"Bearer {t}"}},
    ],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_accepted_token_forms(server: Server, protocol: str, payload_of) -> None:  # type: ignore[no-untyped-def]
    account = sign_up(GraphQLClient(server.url), "Ann")
    ws = await GraphQLWebSocket.open(server.ws_url, protocol)
    assert (await ws.init(payload_of(account.token)))["type"] == "connection_ack"
    await ws.subscribe("me", "{ me { name } }")
    assert (await ws.result("me"))["data"] == {"me": {"name": "Ann"}}
    await ws.close()


@pytest.mark.parametrize("payload", [None, {}, {"token": "nope"}, {"authorization": "Bearer "}, "a string"])
async def test_transport_ws_refuses_a_missing_or_bad_token_with_4403(server: Server, payload: object) -> None:
    ws = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS)
    await ws.send({"type": "connection_init", "payload": payload})
    assert await ws.close_code() == 4403
    assert healthy(server)


@pytest.mark.parametrize("payload", [None, {"token": "nope"}])
async def test_legacy_ws_refuses_a_bad_token_with_connection_error(server: Server, payload: object) -> None:
    ws = await GraphQLWebSocket.open(server.ws_url, LEGACY_WS)
    await ws.send({"type": "connection_init", "payload": payload})
    refused = json.loads(await asyncio.wait_for(ws.ws.recv(), 5))
    assert refused["type"] == "connection_error"
    assert refused["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await ws.close_code() is not None


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '{"no": "type"}', '{"type": "unheard-of"}', '{"type": 7}'])
async def test_invalid_messages_close_with_4400(server: Server, protocol: str, frame: str) -> None:
    account = sign_up(GraphQLClient(server.url), "Ann")
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, account.token)
    await ws.send(frame)
    assert await ws.close_code() == 4400
    assert healthy(server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscribe_without_a_query_closes_with_4400(server: Server, protocol: str) -> None:
    account = sign_up(GraphQLClient(server.url), "Ann")
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, account.token)
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    await ws.send({"id": "1", "type": kind, "payload": {"variables": {}}})
    assert await ws.close_code() == 4400


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscribing_before_connection_init_closes_with_4401(server: Server, protocol: str) -> None:
    ws = await GraphQLWebSocket.open(server.ws_url, protocol)
    await ws.subscribe("1", "{ me { id } }")
    assert await ws.close_code() == 4401


async def test_a_duplicate_operation_id_closes_with_4409(server: Server) -> None:
    client = GraphQLClient(server.url)
    account = sign_up(client, "Ann")
    room = create_room(client, account)
    ws = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, account.token)
    await ws.subscribe("same", MESSAGE_CREATED, {"room": room})
    await ws.subscribe("same", MESSAGE_CREATED, {"room": room})
    assert await ws.close_code() == 4409


async def test_a_second_connection_init_closes_with_4429(server: Server) -> None:
    account = sign_up(GraphQLClient(server.url), "Ann")
    ws = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, account.token)
    await ws.send({"type": "connection_init", "payload": {"token": account.token}})
    assert await ws.close_code() == 4429


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_no_connection_init_in_time_closes_with_4408(brisk: Server, protocol: str) -> None:
    """graphql-transport-ws's rule; Ariadne's legacy handler would wait forever, so it gets the same."""
    ws = await GraphQLWebSocket.open(brisk.ws_url, protocol)
    assert await ws.close_code(timeout=5) == 4408
    assert healthy(brisk)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_connection_initialised_in_time_outlives_the_init_timeout(brisk: Server, protocol: str) -> None:
    account = sign_up(GraphQLClient(brisk.url), "Ann")
    ws = await GraphQLWebSocket.open(brisk.ws_url, protocol, account.token)
    assert await ws.silent(1.5)  # past the one-second init timeout: nothing but keepalives
    await ws.subscribe("me", "{ me { name } }")
    assert (await ws.result("me"))["data"] == {"me": {"name": "Ann"}}
    await ws.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_the_document_does_not_contain_is_refused_and_the_connection_lives_on(
    server: Server, protocol: str
) -> None:
    """Ariadne's dispatch raised on these and dropped the whole connection without a close code."""
    account = sign_up(GraphQLClient(server.url), "Ann")
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, account.token)
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    await ws.send({"id": "named", "type": kind, "payload": {"query": "query A { me { id } }", "operationName": "B"}})
    assert [error["extensions"]["code"] for error in await ws.error("named")] == ["GRAPHQL_VALIDATION_FAILED"]
    await ws.subscribe("none", "fragment F on User { id }")
    assert [error["extensions"]["code"] for error in await ws.error("none")] == ["GRAPHQL_VALIDATION_FAILED"]
    await ws.subscribe("me", "{ me { name } }")
    assert (await ws.result("me"))["data"] == {"me": {"name": "Ann"}}
    await ws.close()
    assert healthy(server)


@pytest.mark.parametrize(("protocol", "keepalive"), [(TRANSPORT_WS, "ping"), (LEGACY_WS, "ka")])
async def test_keepalives_arrive_on_schedule(brisk: Server, protocol: str, keepalive: str) -> None:
    account = sign_up(GraphQLClient(brisk.url), "Ann")
    ws = await GraphQLWebSocket.open(brisk.ws_url, protocol)
    await ws.send({"type": "connection_init", "payload": {"token": account.token}})
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.5
    while loop.time() < deadline:
        try:
            seen.append(json.loads(await asyncio.wait_for(ws.ws.recv(), deadline - loop.time()))["type"])
        except TimeoutError:
            break
    assert seen[0] == "connection_ack"
    assert seen.count(keepalive) >= 2, seen
    await ws.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


async def test_a_client_that_never_answers_websocket_pings_is_closed_with_1011(brisk: Server) -> None:
    """Dead peers are found by WebSocket pings (one timer per process pings every connection):
    a ping still unanswered at the next one closes the connection. Clients that answer, as every
    WebSocket library does by itself, stay (test_keepalives_arrive_on_schedule)."""
    account = sign_up(GraphQLClient(brisk.url), "Mute")
    reader, writer = await asyncio.open_connection("127.0.0.1", brisk.port)
    writer.write(upgrade_request("127.0.0.1", brisk.port, "/graphql", TRANSPORT_WS))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.write(
        client_frame(0x1, json.dumps({"type": "connection_init", "payload": {"token": account.token}}).encode())
    )
    opcodes = []
    async with asyncio.timeout(10):
        while not opcodes or opcodes[-1] != 0x8:
            opcode, payload = await read_frame(reader)
            opcodes.append(opcode)
    writer.close()
    assert 0x9 in opcodes, opcodes  # pinged ...
    assert int.from_bytes(payload[:2], "big") == 1011, payload  # ... and closed, unanswered
    assert healthy(brisk)


async def test_legacy_stop_really_stops_and_the_connection_keeps_serving(server: Server) -> None:
    client = GraphQLClient(server.url)
    account = sign_up(client, "Ann")
    room = create_room(client, account)
    ws = await GraphQLWebSocket.open(server.ws_url, LEGACY_WS, account.token)
    await ws.subscribe("1", MESSAGE_CREATED, {"room": room})
    await ws.barrier()
    post_message(client, account, room, "one")
    assert [m["body"] for m in await ws.messages("1", 1)] == ["one"]
    await ws.stop("1")
    await ws.barrier()
    post_message(client, account, room, "two")
    assert await ws.silent()
    await ws.subscribe("2", MESSAGE_CREATED, {"room": room})
    await ws.barrier()
    post_message(client, account, room, "three")
    assert [m["body"] for m in await ws.messages("2", 1)] == ["three"]
    await ws.close()


async def test_legacy_start_with_a_used_id_replaces_the_operation(server: Server) -> None:
    client = GraphQLClient(server.url)
    account = sign_up(client, "Ann")
    first, second = create_room(client, account, "first"), create_room(client, account, "second")
    ws = await GraphQLWebSocket.open(server.ws_url, LEGACY_WS, account.token)
    await ws.subscribe("1", MESSAGE_CREATED, {"room": first})
    await ws.subscribe("1", MESSAGE_CREATED, {"room": second})
    await ws.barrier()
    post_message(client, account, first, "to the replaced operation")
    assert await ws.silent()
    post_message(client, account, second, "to the new one")
    assert [m["body"] for m in await ws.messages("1", 1)] == ["to the new one"]
    await ws.close()


async def test_transport_complete_stops_an_operation(server: Server) -> None:
    client = GraphQLClient(server.url)
    account = sign_up(client, "Ann")
    room = create_room(client, account)
    ws = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, account.token)
    await ws.subscribe("1", MESSAGE_CREATED, {"room": room})
    await ws.barrier()
    await ws.stop("1")
    await ws.barrier()
    post_message(client, account, room, "nobody listens")
    assert await ws.silent()
    await ws.subscribe("1", MESSAGE_CREATED, {"room": room})  # the id is free again
    await ws.barrier()
    post_message(client, account, room, "listening again")
    assert [m["body"] for m in await ws.messages("1", 1)] == ["listening again"]
    await ws.close()
