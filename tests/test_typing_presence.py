"""Typing and presence: ephemeral topics kept in Redis (in memory on the embedded default), never
in Postgres or the log. Typing shows on the first heartbeat and clears a few seconds after the
last, or at once when the typer posts; presence is per user across connections and workers, does
not flap offline over a restart, and a killed server's users go within a bounded time."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.graphql import Account, GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.processes import (
    SHARED_REDIS_URL,
    PrivateRedis,
    Server,
    create_database,
    drop_database,
    migrate,
    unique_name,
)
from tests.support.wsclient import PROTOCOLS, TRANSPORT_WS, GraphQLWebSocket

TYPING = "mutation($r: ID!) { typing(room: $r) }"
WHO_TYPES = "subscription($r: ID!) { typing(room: $r) { room { id } users { name } } }"
WHO_IS_ON = "subscription($r: ID!) { presence(room: $r) { room { id } online { name } } }"
# Short times, so the tests see expiries: typing 2 s, presence held 3 s, offline 1 s after a close.
BRISK = {"TYPING_SECONDS": "2", "PRESENCE_SECONDS": "3", "PRESENCE_OFFLINE_AFTER": "1", "RATE_LIMIT_TYPING": "5/3600"}


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = unique_name("chat_presence")
    url = create_database(name)
    migrate({"DATABASE_URL": url})
    yield url
    drop_database(name)


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="module")
def brisk(database: str, prefix: str) -> Iterator[Server]:
    server = Server(
        env={"DATABASE_URL": database, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": prefix, **BRISK}, workers=2
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database = tmp_path_factory.mktemp("embedded") / "chat.db"
    env = {"DATABASE_URL": f"sqlite:///{database}", "REDIS_URL": "", **BRISK}
    migrate(env)
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


def room_of_two(api: GraphQLClient) -> tuple[Account, Account, str]:
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    join_room(api, bob, room)
    return ann, bob, room


async def names(ws: GraphQLWebSocket, field: str, key: str, timeout: float = 10.0) -> list[str]:
    payload = await ws.result("s", timeout)
    assert "errors" not in payload, payload
    return [user["name"] for user in payload["data"][field][key]]


async def until(
    ws: GraphQLWebSocket, field: str, key: str, wanted: list[str], timeout: float = 15.0, sort: bool = False
) -> list[list[str]]:
    """Every state received until `wanted` (in any order, with `sort`): what changed on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        seen.append(await names(ws, field, key, max(0.1, deadline - time.monotonic())))
        if (sorted(seen[-1]) if sort else seen[-1]) == wanted:
            return seen


@pytest.mark.parametrize("where", ["brisk", "embedded"])
async def test_typing_shows_on_a_heartbeat_and_clears_after_the_last_or_on_posting(
    request: pytest.FixtureRequest, where: str
) -> None:
    server: Server = request.getfixturevalue(where)
    api = GraphQLClient(server.url)
    ann, bob, room = room_of_two(api)
    watcher = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, ann.token)
    await watcher.subscribe("s", WHO_TYPES, {"r": room})
    assert await names(watcher, "typing", "users") == []  # the state now, first
    assert api.data(TYPING, {"r": room}, bob.token) == {"typing": True}
    assert await names(watcher, "typing", "users") == ["Bob"]
    api.data(TYPING, {"r": room}, bob.token)  # a heartbeat of someone already typing: no news
    assert await watcher.silent(1.0)
    started = time.monotonic()
    assert await names(watcher, "typing", "users", timeout=5) == []  # 2 s after the last heartbeat
    assert 0.5 < time.monotonic() - started < 4

    api.data(TYPING, {"r": room}, bob.token)
    assert await names(watcher, "typing", "users") == ["Bob"]
    post_message(api, bob, room, "done typing")
    assert await names(watcher, "typing", "users", timeout=1.5) == []  # at once, not at expiry
    await watcher.close()


async def test_typing_is_rate_limited_and_for_members_only(brisk: Server) -> None:
    api = GraphQLClient(brisk.url)
    _, bob, room = room_of_two(api)
    answers = [api.post(TYPING, {"r": room}, bob.token) for _ in range(6)]
    assert [answer.get("data") for answer in answers[:5]] == [{"typing": True}] * 5
    assert answers[5]["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    eve = sign_up(api, "Eve")
    assert api.error_codes(TYPING, {"r": room}, eve.token) == ["FORBIDDEN"]
    ws = await GraphQLWebSocket.open(brisk.ws_url, TRANSPORT_WS, eve.token)
    await ws.subscribe("s", WHO_TYPES, {"r": room})
    assert [error["extensions"]["code"] for error in await ws.error("s")] == ["FORBIDDEN"]
    await ws.subscribe("p", WHO_IS_ON, {"r": room})
    assert [error["extensions"]["code"] for error in await ws.error("p")] == ["FORBIDDEN"]
    await ws.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_presence_is_per_user_across_connections_and_leaving_removes_them(brisk: Server, protocol: str) -> None:
    api = GraphQLClient(brisk.url)
    ann, bob, room = room_of_two(api)
    watcher = await GraphQLWebSocket.open(brisk.ws_url, protocol, ann.token)
    await watcher.subscribe("s", WHO_IS_ON, {"r": room})
    assert await until(watcher, "presence", "online", ["Ann"], sort=True)
    laptop = await GraphQLWebSocket.open(brisk.ws_url, TRANSPORT_WS, bob.token)
    assert await until(watcher, "presence", "online", ["Ann", "Bob"], sort=True)
    phone = await GraphQLWebSocket.open(brisk.ws_url, TRANSPORT_WS, bob.token)
    await laptop.close()  # Bob is still on his phone
    assert await watcher.silent(2.5)
    await phone.close()
    assert await until(watcher, "presence", "online", ["Ann"], timeout=6, sort=True)  # after the debounce

    again = await GraphQLWebSocket.open(brisk.ws_url, TRANSPORT_WS, bob.token)
    assert await until(watcher, "presence", "online", ["Ann", "Bob"], sort=True)
    api.data("mutation($r: ID!) { leaveRoom(room: $r) }", {"r": room}, bob.token)
    assert await until(watcher, "presence", "online", ["Ann"], timeout=5, sort=True)  # connected, but not a member
    await again.close()
    await watcher.close()


async def test_presence_survives_a_restart_and_a_killed_server_goes_within_bounds(database: str, prefix: str) -> None:
    """Bob's server restarts (SIGTERM, 1012, he reconnects within a second): Ann, on another
    server, never sees him go. Then his server is killed: nothing renews his place, and he goes
    once it runs out (6 s here: longer than a server takes to start again)."""
    env = {"DATABASE_URL": database, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": prefix, **BRISK}
    env["PRESENCE_SECONDS"] = "6"
    anns, bobs = Server(env=env, workers=1).start(), Server(env=env, workers=1).start()
    try:
        api = GraphQLClient(anns.url)
        ann, bob, room = room_of_two(api)
        watcher = await GraphQLWebSocket.open(anns.ws_url, TRANSPORT_WS, ann.token)
        await watcher.subscribe("s", WHO_IS_ON, {"r": room})
        bob_ws = await GraphQLWebSocket.open(bobs.ws_url, TRANSPORT_WS, bob.token)
        assert await until(watcher, "presence", "online", ["Ann", "Bob"], sort=True)

        assert bobs.process is not None
        bobs.process.send_signal(signal.SIGTERM)
        assert await bob_ws.close_code(timeout=10) == 1012
        bobs.process.wait(20)
        bobs.start()  # the same port: Bob's client comes back
        bob_ws = await GraphQLWebSocket.open(bobs.ws_url, TRANSPORT_WS, bob.token)
        assert await watcher.silent(5.0)  # no state without Bob went out: no flap

        bobs.kill()
        started = time.monotonic()
        assert await until(watcher, "presence", "online", ["Ann"], timeout=15, sort=True)
        assert time.monotonic() - started < 9  # held 6 s from its last renewal, renewed every 2 s
        await watcher.close()
    finally:
        bobs.stop()
        anns.stop()


async def test_many_clients_leaving_at_once_cost_redis_a_connection_not_one_each(database: str) -> None:
    """300 connections of 20 members close together: their presence goes in a pipeline or two on
    the connections the worker already had. A command for each opened a Redis connection for
    nearly every one of them, and the pool kept them all: a few clients going away used up a
    Redis plan's connection limit."""
    redis = PrivateRedis().start()
    env = {"DATABASE_URL": database, "REDIS_URL": redis.url, **BRISK}
    server = Server(env=env, workers=1).start()
    try:
        api = GraphQLClient(server.url)
        members = [sign_up(api, f"m{i}") for i in range(20)]
        room = create_room(api, members[0])
        for member in members[1:]:
            join_room(api, member, room)
        watcher = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, members[0].token)
        await watcher.subscribe("s", WHO_IS_ON, {"r": room})
        clients: list[GraphQLWebSocket] = []
        for start in range(0, 300, 50):
            clients += await asyncio.gather(
                *(
                    GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, members[i % 20].token)
                    for i in range(start, start + 50)
                )
            )
        everyone = sorted(member.name for member in members)
        assert sorted((await until(watcher, "presence", "online", everyone, timeout=15, sort=True))[-1]) == everyone
        before = redis.connected_clients()

        await asyncio.gather(*(client.close() for client in clients))
        peak = before
        deadline = time.monotonic() + 3  # offline after 1 s: released by now
        while time.monotonic() < deadline:
            peak = max(peak, redis.connected_clients())
            await asyncio.sleep(0.02)
        assert peak - before <= 2, (before, peak)
        # Still announced: the watcher's own connection keeps its member online, the others go.
        assert await until(watcher, "presence", "online", [members[0].name], timeout=10)
        await watcher.close()
    finally:
        server.stop()
        redis.stop()
