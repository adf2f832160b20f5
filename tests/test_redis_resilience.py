"""Redis can drop connections, time them out or restart: every worker reconnects, resubscribes
and catches its rooms up from Postgres, so every subscriber gets every acknowledged message,
in order, exactly once. Redis here is a server of the test's own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.graphql import Account, GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.processes import PrivateRedis, Server
from tests.support.waiting import until
from tests.support.wsclient import (
    MESSAGE_CREATED,
    PROTOCOLS,
    ROOM_EVENTS,
    GraphQLWebSocket,
    open_on_worker,
    worker_pids,
)

IDLE_TIMEOUT = 1  # seconds: Redis's `timeout`, after which it closes an idle client


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(arguments=("--timeout", str(IDLE_TIMEOUT))).start()  # idle connections die
    yield server
    server.stop()


@pytest.fixture
def app(database_url: str, redis: PrivateRedis) -> Iterator[Server]:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis.url, "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:8]}:"}
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


async def subscribers_on_both_workers(
    app: Server, room: str, account: Account, query: str = MESSAGE_CREATED
) -> list[GraphQLWebSocket]:
    """One subscriber per protocol on each worker."""
    assert app.process is not None
    found = []
    for worker in worker_pids(app.process.pid):
        for protocol in PROTOCOLS:
            ws = await open_on_worker(app.ws_url, app.port, app.process.pid, worker, protocol, account.token)
            await ws.subscribe("s", query, {"room": room})
            await ws.barrier()
            found.append(ws)
    return found


async def assert_everyone_gets(subscribers: list[GraphQLWebSocket], seqs: list[int]) -> None:
    for subscriber in subscribers:
        received = await subscriber.messages("s", len(seqs), timeout=20)
        assert [m["seq"] for m in received] == seqs, subscriber.protocol
        assert await subscriber.silent(0.3)


def ready(app: Server) -> httpx.Response:
    return httpx.get(f"{app.url}/readyz", timeout=10)


def setup_room(app: Server) -> tuple[GraphQLClient, Account, str]:
    api = GraphQLClient(app.url)
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    join_room(api, bob, room)
    return api, ann, room


async def test_killed_pubsub_connections_are_reopened_and_resubscribed(app: Server, redis: PrivateRedis) -> None:
    api, ann, room = setup_room(app)
    subscribers = await subscribers_on_both_workers(app, room, ann)
    post_message(api, ann, room, "before")
    await assert_everyone_gets(subscribers, [1])
    killed = int(redis.cli("CLIENT", "KILL", "TYPE", "pubsub").strip())
    assert killed >= 2  # one pub/sub connection per worker
    # Both workers subscribed again (Redis counts a channel's subscribers: one per worker).
    channel = f"{app.env['CHANNEL_PREFIX']}room:{room}"
    await until(lambda: int(redis.cli("PUBSUB", "NUMSUB", channel).split()[-1]) == 2, "both workers resubscribed")
    post_message(api, ann, room, "after")
    await assert_everyone_gets(subscribers, [2])


async def test_idle_connections_timed_out_by_redis_do_not_lose_messages(app: Server, redis: PrivateRedis) -> None:
    api, ann, room = setup_room(app)
    subscribers = await subscribers_on_both_workers(app, room, ann)
    # The thing waited for: Redis closes connections idle for IDLE_TIMEOUT (the app's publishing
    # ones among them); three times that, so each has been idle past it whatever its last use.
    await asyncio.sleep(3 * IDLE_TIMEOUT)
    post_message(api, ann, room, "after an idle spell")
    await assert_everyone_gets(subscribers, [1])


async def test_a_redis_restart_loses_nothing_acknowledged(app: Server, redis: PrivateRedis) -> None:
    api, ann, room = setup_room(app)
    subscribers = await subscribers_on_both_workers(app, room, ann)
    post_message(api, ann, room, "before")
    await assert_everyone_gets(subscribers, [1])

    redis.stop()
    assert ready(app).status_code == 503
    assert "unavailable" in ready(app).json()["redis"]
    acknowledged = [post_message(api, ann, room, f"while down {i}")["seq"] for i in range(5)]
    assert acknowledged == [2, 3, 4, 5, 6]  # Postgres is the record: posting goes on

    started = time.monotonic()
    redis.start()
    await assert_everyone_gets(subscribers, acknowledged)
    caught_up = time.monotonic() - started
    assert ready(app).status_code == 200
    post_message(api, ann, room, "after")
    await assert_everyone_gets(subscribers, [7])
    print(f"caught up {len(subscribers)} subscribers {caught_up:.2f} s after Redis came back")
    for subscriber in subscribers:
        await subscriber.close()


async def test_room_events_lose_nothing_across_a_redis_restart_and_a_leave_meanwhile_still_ends(
    app: Server, redis: PrivateRedis
) -> None:
    """Joins, messages and a leave while Redis is down: every worker fills them in from the log
    when it is back, and the leaver's subscriptions, whose end was announced into the void, are
    checked again and ended."""
    api, ann, room = setup_room(app)
    cat, dan = sign_up(api, "Cat"), sign_up(api, "Dan")
    join_room(api, dan, room)
    watchers = await subscribers_on_both_workers(app, room, ann, ROOM_EVENTS)
    leavers = await subscribers_on_both_workers(app, room, dan, ROOM_EVENTS)
    redis.stop()
    post_message(api, ann, room, "while down")
    join_room(api, cat, room)
    api.data("mutation($r: ID!) { leaveRoom(room: $r) }", {"r": room}, dan.token)
    redis.start()
    for watcher in watchers:
        events = await watcher.events("s", 3, timeout=20)
        assert [event["__typename"] for event in events] == ["MessageCreated", "MemberJoined", "MemberLeft"]
        assert await watcher.silent(0.3)
    for leaver in leavers:
        message = await leaver.receive(timeout=20)
        while "errors" not in message.get("payload", {}):  # what happened until it left, filled in
            assert message["payload"]["data"]["roomEvents"]["__typename"] in (
                "MessageCreated",
                "MemberJoined",
                "MemberLeft",
            )
            message = await leaver.receive(timeout=20)
        assert message["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert await leaver.receive() == {"type": "complete", "id": "s"}
    for ws in watchers + leavers:
        await ws.close()
