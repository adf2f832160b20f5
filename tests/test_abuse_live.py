"""Issue 24, live delivery: what one user can hold open and make the server do, sent as an
attacker would send it, against real gunicorn on Postgres + Redis.

- MAX_SUBSCRIPTIONS_PER_USER and MAX_CONNECTIONS_PER_USER hold across both workers and every
  transport (WebSocket on either protocol, SSE, multipart); past them a subscription is refused
  with TOO_MANY_SUBSCRIPTIONS in each protocol's own way, and nothing else on the connection is
  disturbed; a WebSocket past MAX_CONNECTIONS_PER_USER is refused at connection_init
  (tests/test_abuse_connections.py has the idle sockets' attack).
- An operation id over 128 bytes is a protocol error (4400).
- A loop of subscribe/unsubscribe from an old cursor replays no more than the user's replay
  budget per window; a resume from far back still gets everything, in order.
- A feed that falls behind Redis resyncs from the log: its queue stays bounded, nothing
  acknowledged is lost.
- A leave whose publish fails still ends the leaver's subscriptions on every worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis as redis_sync

from tests.support.graphql import Account, GraphQLClient, create_room, join_room, post_many, post_message, sign_up
from tests.support.httpstream import open_multipart, open_sse, part_errors
from tests.support.processes import BASE_ENV, SHARED_REDIS_URL, PrivateRedis, Server
from tests.support.wsclient import (
    LEGACY_WS,
    MESSAGE_CREATED,
    ROOM_EVENTS,
    TRANSPORT_WS,
    GraphQLWebSocket,
    Refused,
    open_on_worker,
    worker_pids,
)

SUBSCRIPTIONS = 100  # MAX_SUBSCRIPTIONS_PER_USER's default, which the `server` fixture keeps
CONNECTIONS = int(BASE_ENV["MAX_CONNECTIONS_PER_USER"])
ME = "{ me { id } }"


def codes(errors: list[dict]) -> list[str]:
    return [error["extensions"]["code"] for error in errors]


async def eventually_accepted(ws: GraphQLWebSocket, room: str, poster: Account, api: GraphQLClient) -> None:
    """A subscription started once the slots given back have been released (asynchronously, in
    Redis): retried with a deadline, proven live by a message it receives."""
    deadline = time.monotonic() + 10
    attempt = 0
    while True:
        attempt += 1
        op = f"again{attempt}"
        await ws.subscribe(op, MESSAGE_CREATED, {"room": room})
        await ws.barrier()  # started or refused before the proof is posted
        body = f"proof {uuid.uuid4().hex[:6]}"
        post_message(api, poster, room, body)
        message = await ws.receive()
        if message["type"] in ("next", "data") and "data" in message["payload"]:
            assert message["payload"]["data"]["messageCreated"]["body"] == body
            return
        assert codes(message["payload"] if message["type"] == "error" else message["payload"]["errors"]) == [
            "TOO_MANY_SUBSCRIPTIONS"
        ], message
        if ws.protocol == LEGACY_WS:
            assert await ws.receive() == {"type": "complete", "id": op}
        assert time.monotonic() < deadline, "a given-back slot was never released"
        await asyncio.sleep(0.1)


async def test_subscriptions_per_user_hold_across_workers_and_transports(server: Server) -> None:
    """100 subscriptions: 40 over graphql-transport-ws on one worker, 40 over graphql-ws on the
    other, 10 SSE and 10 multipart streams. The 101st is refused on each transport, and the
    refused client's connection goes on serving it (a query answers, the others deliver)."""
    api = GraphQLClient(server.url)
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, bob)
    join_room(api, ann, room)
    assert server.process is not None
    first, second = worker_pids(server.process.pid)[:2]
    sockets = []
    for worker, protocol in ((first, TRANSPORT_WS), (second, LEGACY_WS)):
        for _ in range(2):
            ws = await open_on_worker(server.ws_url, server.port, server.process.pid, worker, protocol, ann.token)
            for i in range(20):
                await ws.subscribe(f"s{i}", MESSAGE_CREATED, {"room": room})
            sockets.append(ws)
    streams = [await open_sse(server.url, MESSAGE_CREATED, {"room": room}, token=ann.token) for _ in range(10)]
    parts = [await open_multipart(server.url, MESSAGE_CREATED, {"room": room}, token=ann.token) for _ in range(10)]
    post_message(api, bob, room, "to all hundred")
    for ws in sockets:
        received = [await ws.receive(timeout=10) for _ in range(20)]
        assert sorted(m["id"] for m in received) == sorted(f"s{i}" for i in range(20)), received
        assert {m["payload"]["data"]["messageCreated"]["body"] for m in received} == {"to all hundred"}
    for stream in streams:
        assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["to all hundred"]
    for part in parts:
        assert [m["body"] for m in await part.data("messageCreated", 1)] == ["to all hundred"]

    # The 101st, on each transport and on either worker: refused in the protocol's own way.
    for worker, protocol in ((second, TRANSPORT_WS), (first, LEGACY_WS)):
        ws = await open_on_worker(server.ws_url, server.port, server.process.pid, worker, protocol, ann.token)
        await ws.subscribe("over", MESSAGE_CREATED, {"room": room})
        assert codes(await ws.error("over")) == ["TOO_MANY_SUBSCRIPTIONS"]
        await ws.subscribe("q", ME)  # the connection goes on serving
        assert (await ws.result("q"))["data"] == {"me": {"id": ann.id}}
        assert await ws.receive() == {"type": "complete", "id": "q"}
        sockets.append(ws)
    refused_sse = await open_sse(server.url, MESSAGE_CREATED, {"room": room}, token=ann.token)
    assert codes(await refused_sse.refused()) == ["TOO_MANY_SUBSCRIPTIONS"]
    refused_part = await open_multipart(server.url, MESSAGE_CREATED, {"room": room}, token=ann.token)
    [body] = await refused_part.payloads(1)
    assert codes(part_errors(body)) == ["TOO_MANY_SUBSCRIPTIONS"]
    await refused_part.finishes()

    # Nothing else was disturbed: every one of the hundred still delivers.
    post_message(api, bob, room, "still live")
    for ws in sockets[:4]:
        received = [await ws.receive(timeout=10) for _ in range(20)]
        assert {m["payload"]["data"]["messageCreated"]["body"] for m in received} == {"still live"}
    for stream in streams:
        assert [m["body"] for m in await stream.data("messageCreated", 1)] == ["still live"]

    # A slot given back (a stream closed, on whichever worker) can be taken again, on the other.
    await streams.pop().aclose()
    await eventually_accepted(sockets[4], room, bob, api)

    for ws in sockets:
        await ws.close()
    for stream in [*streams, *parts, refused_sse, refused_part]:
        await stream.aclose()


async def test_connections_per_user_hold_across_workers(server: Server) -> None:
    """MAX_CONNECTIONS_PER_USER (50 in the tests' settings) WebSocket connections with a
    subscription each, half on each worker: the next connection is refused at connection_init
    (1008, TOO_MANY_CONNECTIONS), the next SSE subscription with TOO_MANY_SUBSCRIPTIONS, and a
    closed connection gives its slot back."""
    api = GraphQLClient(server.url)
    cat, dan = sign_up(api, "Cat"), sign_up(api, "Dan")
    room = create_room(api, dan)
    join_room(api, cat, room)
    assert server.process is not None
    workers = worker_pids(server.process.pid)[:2]
    held = []
    for i in range(CONNECTIONS):
        worker = workers[i % 2]
        protocol = (TRANSPORT_WS, LEGACY_WS)[i % 2]
        ws = await open_on_worker(server.ws_url, server.port, server.process.pid, worker, protocol, cat.token)
        await ws.subscribe("s", MESSAGE_CREATED, {"room": room})
        await ws.barrier()
        held.append(ws)
    post_message(api, dan, room, "to every connection")
    for ws in held:
        assert [m["body"] for m in await ws.messages("s", 1)] == ["to every connection"]

    refused = await (await GraphQLWebSocket.connect(server.ws_url, TRANSPORT_WS)).acknowledged(cat.token)
    assert isinstance(refused, Refused), "acknowledged past the limit"
    assert (refused.code, refused.reason) == (1008, f"TOO_MANY_CONNECTIONS: at most {CONNECTIONS} per user")
    stream = await open_sse(server.url, MESSAGE_CREATED, {"room": room}, token=cat.token)
    assert codes(await stream.refused()) == ["TOO_MANY_SUBSCRIPTIONS"]
    await stream.aclose()

    await held.pop().close()
    deadline = time.monotonic() + 10
    while isinstance(
        one_more := await (await GraphQLWebSocket.connect(server.ws_url, TRANSPORT_WS)).acknowledged(cat.token),
        Refused,
    ):
        assert one_more.code == 1008, one_more
        assert time.monotonic() < deadline, "a given-back slot was never freed"
        await asyncio.sleep(0.05)
    await one_more.subscribe("s", MESSAGE_CREATED, {"room": room})
    await one_more.barrier()
    post_message(api, dan, room, "to the one that came back")
    assert [m["body"] for m in await one_more.messages("s", 1)] == ["to the one that came back"]
    for ws in [*held, one_more]:
        await ws.close()


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_an_operation_id_over_128_bytes_is_a_protocol_error(server: Server, protocol: str) -> None:
    api = GraphQLClient(server.url)
    eve = sign_up(api, "Eve")
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, eve.token)
    at_most = "é" * 64  # 128 bytes in UTF-8: allowed
    await ws.subscribe(at_most, ME)
    assert (await ws.result(at_most))["data"] == {"me": {"id": eve.id}}
    assert await ws.receive() == {"type": "complete", "id": at_most}
    await ws.subscribe("é" * 65, ME)  # 65 characters, 130 bytes
    assert await ws.close_code() == 4400
    ws = await GraphQLWebSocket.open(server.ws_url, protocol, eve.token)
    await ws.subscribe("x" * 60_000, ME)  # what the issue found kept: ids of up to 64 KiB
    assert await ws.close_code() == 4400


@pytest.fixture
def budgeted(database_url: str) -> Iterator[Server]:
    """A replay budget of 100 executions per 3 s window, and a feed queue of 8 messages."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "LIVE_REPLAY_BUDGET": "100/3",
        "LIVE_FEED_QUEUE": "8",
    }
    server = Server(env=env, workers=1).start()
    yield server
    server.stop()


async def test_a_resume_loop_from_the_start_replays_no_more_than_the_budget(budgeted: Server) -> None:
    """The attack: subscribe from the room's first message, take what comes for a moment,
    unsubscribe, again and again. Older events than the feed keeps are executed for this
    subscriber alone: they count against the user's budget (100 per 3 s), so the loop gets
    about that many per window, not 400 a turn. An honest resume from as far back still
    gets everything, in order, paced."""
    api = GraphQLClient(budgeted.url)
    ann, bob = sign_up(api, "Ann"), sign_up(api, "Bob")
    room = create_room(api, ann)
    join_room(api, bob, room)
    posted = await post_many(budgeted.url, ann.token, room, [f"m{i}" for i in range(400)])
    first = min(posted, key=lambda message: message["seq"])
    ws = await GraphQLWebSocket.open(budgeted.ws_url, TRANSPORT_WS, bob.token)
    started = time.monotonic()
    received = 0
    for turn in range(6):
        await ws.subscribe(f"r{turn}", MESSAGE_CREATED, {"room": room, "after": first["id"]})
        try:
            while True:
                message = await ws.receive(timeout=0.5)
                assert message["id"] == f"r{turn}" or message["type"] == "next", message
                received += 1
        except TimeoutError:
            pass
        await ws.stop(f"r{turn}")
    elapsed = time.monotonic() - started
    windows = int(elapsed // 3) + 2  # the windows the loop touched, at most
    # Each window allows 100 executions (taken 25 at a time, so a turn may hold 25 unspent).
    assert received <= windows * 100 + 6 * 25, (received, elapsed)
    assert received < 6 * 399 / 2, received  # unbounded, every turn would replay all 399
    assert received >= 25, received  # paced, not refused: what the budget allows goes out
    print(f"a resume loop of 6 turns in {elapsed:.1f} s received {received} results (399 a turn unbounded)")
    await ws.close()

    # An honest resume from as far back: everything, gap-free, in order, paced by the budget.
    honest = await GraphQLWebSocket.open(budgeted.ws_url, LEGACY_WS, bob.token)
    # The thing waited for: the budget's window (LIVE_REPLAY_BUDGET's seconds) runs out, so the
    # honest resume has a window of its own and the attack's spending does not slow it.
    await asyncio.sleep(float(budgeted.env["LIVE_REPLAY_BUDGET"].split("/")[1]))
    await honest.subscribe("h", MESSAGE_CREATED, {"room": room, "after": first["id"]})
    got = await honest.messages("h", 399, timeout=15)
    assert [m["seq"] for m in got] == list(range(first["seq"] + 1, first["seq"] + 400))
    assert await honest.silent(0.3)
    await honest.close()


async def test_a_feed_that_falls_behind_resyncs_from_the_log_and_loses_nothing(budgeted: Server) -> None:
    """A feed's queue holds 8 messages here. A flood on the room's channel (stale events, as a
    burst would) overflows it: what it held is dropped for a resync, which reads the log, so
    every acknowledged message reaches every subscriber once, in order."""
    api = GraphQLClient(budgeted.url)
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    subscribers = [await GraphQLWebSocket.open(budgeted.ws_url, p, ann.token) for p in (TRANSPORT_WS, LEGACY_WS)]
    for ws in subscribers:
        await ws.subscribe("s", MESSAGE_CREATED, {"room": room})
        await ws.barrier()
    first = post_message(api, ann, room, "before the flood")
    for ws in subscribers:
        assert [m["seq"] for m in await ws.messages("s", 1)] == [first["seq"]]

    channel = f"{budgeted.env['CHANNEL_PREFIX']}room:{room}"
    stale = f'{{"seq":{first["seq"]},"kind":"message_created"}}'
    flooder = redis_sync.Redis.from_url(SHARED_REDIS_URL)

    def flood() -> None:
        for _ in range(10):
            with flooder.pipeline(transaction=False) as pipe:
                for _ in range(2000):
                    pipe.publish(channel, stale)
                pipe.execute()

    flooding = asyncio.get_running_loop().run_in_executor(None, flood)
    posted = await post_many(budgeted.url, ann.token, room, [f"during {i}" for i in range(60)], concurrency=8)
    await flooding
    flooder.close()
    expected = sorted(message["seq"] for message in posted)
    for ws in subscribers:
        got = await ws.messages("s", len(expected), timeout=30)
        assert [m["seq"] for m in got] == expected, ws.protocol
        assert await ws.silent(0.5)
    assert "fell 8 messages behind" in budgeted.log()  # the bound was reached, and held
    after = post_message(api, ann, room, "after the flood")
    for ws in subscribers:
        assert [m["seq"] for m in await ws.messages("s", 1)] == [after["seq"]]
        await ws.close()


async def _until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Poll `condition` until it holds; fail past `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def _subscribers(redis: PrivateRedis, channel: str) -> int:
    return int(redis.cli("PUBSUB", "NUMSUB", channel).split()[-1])


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.fixture
def on_private_redis(database_url: str, private_redis: PrivateRedis) -> Iterator[Server]:
    env = {"DATABASE_URL": database_url, "REDIS_URL": private_redis.url, "CHANNEL_PREFIX": "t:"}
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


async def test_a_leave_whose_publish_fails_still_ends_the_leaver_everywhere(
    on_private_redis: Server, private_redis: PrivateRedis
) -> None:
    """Redis refuses PUBLISH (an ACL change stands in for a publishing connection that fails
    while the pub/sub connections stay up, so no reconnect resyncs anything) while Dan leaves:
    the leave succeeds, his subscriptions on the worker that served it end at once, those on
    the other worker once the retried end gets through; after that he receives nothing."""
    app = on_private_redis
    api = GraphQLClient(app.url)
    ann, dan = sign_up(api, "Ann"), sign_up(api, "Dan")
    room = create_room(api, ann)
    join_room(api, dan, room)
    assert app.process is not None
    leavers, watchers = [], []
    for worker in worker_pids(app.process.pid)[:2]:
        for account, into in ((dan, leavers), (ann, watchers)):
            ws = await open_on_worker(app.ws_url, app.port, app.process.pid, worker, TRANSPORT_WS, account.token)
            await ws.subscribe("s", ROOM_EVENTS, {"room": room})
            into.append(ws)
    # Every worker's feed subscribed in Redis (an end only reaches a live feed).
    await _until(lambda: _subscribers(private_redis, f"t:room:{room}") >= 2, "both workers' feeds subscribed")
    private_redis.cli("ACL", "SETUSER", "default", "-publish")
    try:
        assert api.data("mutation($r: ID!) { leaveRoom(room: $r) }", {"r": room}, dan.token) == {"leaveRoom": True}
        # Not a barrier: the outage lasts a second more, so the end's retries meet refusals too
        # (its first publish was refused within the mutation).
        await asyncio.sleep(1.0)
    finally:
        private_redis.cli("ACL", "SETUSER", "default", "+publish")
    for leaver in leavers:
        message = await leaver.receive(timeout=10)
        while "errors" not in message.get("payload", {}):  # what happened before it ended
            assert message["payload"]["data"]["roomEvents"]["__typename"] in ("MemberLeft", "MessageCreated")
            message = await leaver.receive(timeout=10)
        assert codes(message["payload"]["errors"]) == ["FORBIDDEN"], message
        assert await leaver.receive() == {"type": "complete", "id": "s"}
    post_message(api, ann, room, "Dan must not read this")
    for watcher in watchers:
        event = (await watcher.events("s", 1))[0]
        while event["__typename"] != "MessageCreated":  # the leave, filled from the log
            event = (await watcher.events("s", 1))[0]
        assert event["message"]["body"] == "Dan must not read this"
    for leaver in leavers:
        assert await leaver.silent(0.5)
    assert "An end on" in app.log()  # the retry, not a reconnect, carried it
    for ws in [*leavers, *watchers]:
        await ws.close()


async def test_with_redis_down_subscriptions_are_counted_per_process_not_refused(
    on_private_redis: Server, private_redis: PrivateRedis
) -> None:
    """Redis holds the counts across processes; while it is away each process counts in its own
    memory (the limits hold per process) rather than refusing everyone: a subscription made
    then starts, and gets what was posted meanwhile once Redis is back."""
    app = on_private_redis
    api = GraphQLClient(app.url)
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    ws = await GraphQLWebSocket.open(app.ws_url, TRANSPORT_WS, ann.token)
    private_redis.stop()
    start = post_message(api, ann, room, "before")
    await ws.subscribe("s", MESSAGE_CREATED, {"room": room, "after": start["id"]})
    assert await ws.silent(1.0)  # not refused
    posted = post_message(api, ann, room, "while Redis is down")
    private_redis.start()
    assert [m["seq"] for m in await ws.messages("s", 1, timeout=20)] == [posted["seq"]]
    assert "Counting live" in app.log()
    await ws.close()


async def test_a_restarted_worker_gives_its_slots_back_so_clients_reconnect_at_once(database_url: str) -> None:
    """A worker stopping (a deploy, a recycle: SIGTERM) gives back every slot it held: its
    clients, reconnecting at once to the next worker, find their connections' slots free rather
    than waiting out the leases (LIVE_LEASE_SECONDS)."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "MAX_CONNECTIONS_PER_USER": "3",
        "LIVE_LEASE_SECONDS": "300",
    }
    app = Server(env=env, workers=1).start()
    try:
        api = GraphQLClient(app.url)
        ann = sign_up(api, "Ann")
        room = create_room(api, ann)
        assert app.process is not None
        [worker] = worker_pids(app.process.pid)
        held = []
        for _ in range(3):
            ws = await GraphQLWebSocket.open(app.ws_url, TRANSPORT_WS, ann.token)
            await ws.subscribe("s", MESSAGE_CREATED, {"room": room})
            await ws.barrier()
            held.append(ws)
        post_message(api, ann, room, "before")
        for ws in held:
            assert [m["body"] for m in await ws.messages("s", 1)] == ["before"]
        os.kill(worker, signal.SIGTERM)
        for ws in held:
            assert await ws.close_code(timeout=15) == 1012
        deadline = time.monotonic() + 20
        while worker_pids(app.process.pid) in ([], [worker]):
            assert time.monotonic() < deadline, "no new worker"
            await asyncio.sleep(0.1)
        app.wait_ready()
        again = []
        for _ in range(3):
            ws = await GraphQLWebSocket.open(app.ws_url, TRANSPORT_WS, ann.token)
            await ws.subscribe("s", MESSAGE_CREATED, {"room": room})
            await ws.barrier()
            again.append(ws)
        post_message(api, ann, room, "after")
        for ws in again:
            assert [m["body"] for m in await ws.messages("s", 1)] == ["after"]
            await ws.close()
    finally:
        app.stop()
