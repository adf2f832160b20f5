"""Issue 24, MAX_CONNECTIONS_PER_USER: the connections and streams one user holds open at once,
sent as an attacker would send them, against real gunicorn (two workers) on Postgres + Redis,
with the limit at 3.

- A WebSocket acknowledged for a user holds one of the user's connection slots from its
  `connection_ack` until it closes, idle or not; its subscriptions take no other. The next
  connection_init is refused, in the protocol's own way and in one that Apollo's clients do not
  answer with a reconnect storm: graphql-transport-ws closes with 1008 and a reason naming
  TOO_MANY_CONNECTIONS (graphql-ws's client takes 1008 as fatal), graphql-ws sends
  `connection_error` with that code, then closes with 1008.
- The slots are counted in Redis across workers; a refusal holds nothing; a closed connection
  gives its slot back.
- SSE and multipart streams still count, from their subscription.
- Anonymous connections are refused at connection_init (4403) as before; another user is
  unaffected.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_sync

from tests.support.graphql import Account, GraphQLClient, create_room, join_room, post_message, sign_up
from tests.support.httpstream import open_multipart, open_sse, part_errors
from tests.support.processes import SHARED_REDIS_URL, Server
from tests.support.wsclient import (
    LEGACY_WS,
    MESSAGE_CREATED,
    PROTOCOLS,
    TRANSPORT_WS,
    GraphQLWebSocket,
    Refused,
    connect_on_worker,
    worker_pids,
)
from tests.test_apollo_clients import run_node_tests

LIMIT = 3
POLICY_VIOLATION = 1008
ME = "{ me { id } }"


@pytest.fixture(scope="module")
def limited(database_url: str) -> Iterator[Server]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "MAX_CONNECTIONS_PER_USER": str(LIMIT),
    }
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis() -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(SHARED_REDIS_URL)
    yield client
    client.close()


def held_in_redis(redis: redis_sync.Redis, server: Server, account: Account) -> int:
    """The connection slots the user holds, in every process, as Redis counts them."""
    return int(redis.zcount(f"{server.env['CHANNEL_PREFIX']}live:connections:{account.id}", time.time(), "+inf"))


async def attempt(
    server: Server, protocol: str, account: Account, worker: int | None = None
) -> GraphQLWebSocket | Refused:
    """A connection_init as `account`, on `worker` if given: the acknowledged connection or the refusal."""
    if worker is None:
        ws = await GraphQLWebSocket.connect(server.ws_url, protocol)
    else:
        assert server.process is not None
        ws = await connect_on_worker(server.ws_url, server.port, server.process.pid, worker, protocol)
    return await ws.acknowledged(account.token)


def assert_too_many(outcome: GraphQLWebSocket | Refused, protocol: str) -> None:
    """Refused past the limit: graphql-transport-ws with the close alone, graphql-ws with a
    `connection_error` first; 1008 and a reason naming the code on both."""
    assert isinstance(outcome, Refused), "acknowledged past the limit"
    assert outcome.code == POLICY_VIOLATION, outcome
    assert outcome.reason == f"TOO_MANY_CONNECTIONS: at most {LIMIT} per user", outcome
    if protocol == TRANSPORT_WS:
        assert outcome.messages == [], outcome
    else:
        [error] = outcome.messages
        assert error["type"] == "connection_error", outcome
        assert error["payload"]["extensions"] == {"code": "TOO_MANY_CONNECTIONS"}, outcome


async def held(server: Server, protocol: str, account: Account, worker: int | None = None) -> GraphQLWebSocket:
    outcome = await attempt(server, protocol, account, worker)
    assert isinstance(outcome, GraphQLWebSocket), outcome
    return outcome


async def until_acknowledged(server: Server, protocol: str, account: Account) -> GraphQLWebSocket:
    """A connection acknowledged once a given-back slot is free again (given back
    asynchronously, in Redis): each attempt before then is the refusal; 10 s at most."""
    deadline = time.monotonic() + 10
    while True:
        outcome = await attempt(server, protocol, account)
        if isinstance(outcome, GraphQLWebSocket):
            return outcome
        assert_too_many(outcome, protocol)
        assert time.monotonic() < deadline, "a given-back slot was never freed"
        await asyncio.sleep(0.05)


async def test_idle_sockets_hold_the_slots_across_workers_and_the_next_is_refused_on_both_protocols(
    limited: Server, redis: redis_sync.Redis
) -> None:
    """The attack: open sockets, acknowledge them, subscribe to nothing. Three of them (two on
    one worker, one on the other) are all the user gets: a fourth is refused on the worker
    holding only one of them (so the count is the two workers' together, in Redis), on either
    protocol, and the refusals hold nothing. Closing one frees its slot for the next connection."""
    api = GraphQLClient(limited.url)
    ann = sign_up(api, "Ann")
    assert limited.process is not None
    first, second = worker_pids(limited.process.pid)[:2]
    sockets = [
        await held(limited, TRANSPORT_WS, ann, first),
        await held(limited, LEGACY_WS, ann, first),
        await held(limited, TRANSPORT_WS, ann, second),
    ]
    assert held_in_redis(redis, limited, ann) == LIMIT

    for protocol in PROTOCOLS:
        assert_too_many(await attempt(limited, protocol, ann, second), protocol)
        assert_too_many(await attempt(limited, protocol, ann, first), protocol)
    assert held_in_redis(redis, limited, ann) == LIMIT
    for ws in sockets:  # the held ones are undisturbed
        await ws.subscribe("q", ME)
        assert (await ws.result("q"))["data"] == {"me": {"id": ann.id}}

    await sockets.pop(1).close()
    sockets.append(await until_acknowledged(limited, LEGACY_WS, ann))
    assert held_in_redis(redis, limited, ann) == LIMIT
    assert_too_many(await attempt(limited, TRANSPORT_WS, ann), TRANSPORT_WS)
    for ws in sockets:
        await ws.close()


async def test_an_acknowledged_socket_subscribes_without_another_slot(limited: Server) -> None:
    """Three sockets at the limit, each with two subscriptions on it: all start and deliver (the
    slot taken at the acknowledgement is the connection's for its subscriptions too)."""
    api = GraphQLClient(limited.url)
    bob = sign_up(api, "Bob")
    room = create_room(api, bob)
    sockets = [await held(limited, protocol, bob) for protocol in (TRANSPORT_WS, LEGACY_WS, TRANSPORT_WS)]
    assert_too_many(await attempt(limited, LEGACY_WS, bob), LEGACY_WS)
    # Each subscription resumes after this one: the next message reaches it however late the
    # server starts it (a subscribe has no acknowledgement to wait for).
    before = post_message(api, bob, room, "before")["id"]
    for ws in sockets:
        for op in ("a", "b"):
            await ws.subscribe(op, MESSAGE_CREATED, {"room": room, "after": before})
    post_message(api, bob, room, "to every subscription")
    for ws in sockets:
        received = [await ws.receive() for _ in range(2)]
        assert sorted(m["id"] for m in received) == ["a", "b"], received
        assert {m["payload"]["data"]["messageCreated"]["body"] for m in received} == {"to every subscription"}
    for ws in sockets:
        await ws.close()


async def test_sse_and_multipart_streams_still_count(limited: Server, redis: redis_sync.Redis) -> None:
    """A stream takes a slot with its subscription: an SSE and a multipart subscription and one
    socket are the limit, so the next socket is refused at connection_init and the next stream's
    subscription with TOO_MANY_SUBSCRIPTIONS; a streamed query takes none. A closed stream
    frees its slot for a socket."""
    api = GraphQLClient(limited.url)
    cat, dan = sign_up(api, "Cat"), sign_up(api, "Dan")
    room = create_room(api, dan)
    join_room(api, cat, room)
    sse = await open_sse(limited.url, MESSAGE_CREATED, {"room": room}, token=cat.token)
    part = await open_multipart(limited.url, MESSAGE_CREATED, {"room": room}, token=cat.token)
    post_message(api, dan, room, "streams are live")  # each has its slot once it delivers
    assert [m["body"] for m in await sse.data("messageCreated", 1)] == ["streams are live"]
    assert [m["body"] for m in await part.data("messageCreated", 1)] == ["streams are live"]
    socket = await held(limited, TRANSPORT_WS, cat)
    assert held_in_redis(redis, limited, cat) == LIMIT

    for protocol in PROTOCOLS:
        assert_too_many(await attempt(limited, protocol, cat), protocol)
    refused_sse = await open_sse(limited.url, MESSAGE_CREATED, {"room": room}, token=cat.token)
    assert [e["extensions"]["code"] for e in await refused_sse.refused()] == ["TOO_MANY_SUBSCRIPTIONS"]
    refused_part = await open_multipart(limited.url, MESSAGE_CREATED, {"room": room}, token=cat.token)
    [body] = await refused_part.payloads(1)
    assert [e["extensions"]["code"] for e in part_errors(body)] == ["TOO_MANY_SUBSCRIPTIONS"]
    await refused_part.finishes()
    query = await open_sse(limited.url, ME, token=cat.token)
    assert await query.results(1) == [{"data": {"me": {"id": cat.id}}}]

    await sse.aclose()
    another = await until_acknowledged(limited, LEGACY_WS, cat)
    for closing in (socket, another):
        await closing.close()
    for stream in (part, refused_sse, refused_part, query):
        await stream.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_anonymous_connections_and_other_users_are_unaffected(limited: Server, protocol: str) -> None:
    """With Eve at the limit, a connection_init without a token is refused as it always was
    (4403: no connection is acknowledged anonymously, and every subscription needs a member),
    and Fay connects as usual."""
    api = GraphQLClient(limited.url)
    eve, fay = sign_up(api, "Eve"), sign_up(api, "Fay")
    sockets = [await held(limited, protocol, eve) for _ in range(LIMIT)]
    assert_too_many(await attempt(limited, protocol, eve), protocol)
    anonymous = await (await GraphQLWebSocket.connect(limited.ws_url, protocol)).acknowledged(None)
    assert isinstance(anonymous, Refused) and anonymous.code == 4403, anonymous
    if protocol == LEGACY_WS:
        [error] = anonymous.messages
        assert error["type"] == "connection_error" and error["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
    else:
        assert anonymous.messages == []
    sockets.append(await held(limited, protocol, fay))
    for ws in sockets:
        await ws.close()


async def test_a_repeated_legacy_connection_init_keeps_or_adds_slots(limited: Server, redis: redis_sync.Redis) -> None:
    """graphql-ws lets a client send connection_init again. As the same user it keeps the
    connection's slot (acknowledged at the limit); as another user it takes that user's too (the
    first user's subscriptions may still run on it), refused like any connection past that
    user's limit; closing gives back both."""
    api = GraphQLClient(limited.url)
    gus, hal = sign_up(api, "Gus"), sign_up(api, "Hal")
    sockets = [await held(limited, LEGACY_WS, gus) for _ in range(LIMIT)]
    assert await sockets[0].acknowledged(gus.token) is sockets[0]
    switched = await sockets[1].acknowledged(hal.token)
    assert switched is sockets[1]
    assert (held_in_redis(redis, limited, gus), held_in_redis(redis, limited, hal)) == (LIMIT, 1)
    hals = [await held(limited, TRANSPORT_WS, hal) for _ in range(LIMIT - 1)]
    assert_too_many(await sockets[2].acknowledged(hal.token), LEGACY_WS)  # closes that connection

    await sockets[1].close()
    deadline = time.monotonic() + 10
    while (held_in_redis(redis, limited, gus), held_in_redis(redis, limited, hal)) != (1, LIMIT - 1):
        assert time.monotonic() < deadline, "slots not given back"
        await asyncio.sleep(0.05)
    for ws in [sockets[0], *hals]:
        await ws.close()


async def test_real_clients_are_refused_without_a_reconnect_storm(limited: Server) -> None:
    """graphql-ws's own client (what Apollo's GraphQLWsLink drives), allowed 5 retries, reports
    the 1008 refusal to the subscription after one connection attempt, and
    subscriptions-transport-ws's hands the `connection_error` to its connectionCallback."""
    api = GraphQLClient(limited.url)
    ivy = sign_up(api, "Ivy")
    room = create_room(api, ivy)
    sockets = [await held(limited, TRANSPORT_WS, ivy) for _ in range(LIMIT)]
    output = run_node_tests(
        limited, "connection-limit.test.mjs", {"CHAT_TOKEN": ivy.token, "CHAT_ROOM": room, "CHAT_LIMIT": str(LIMIT)}
    )
    assert re.search(r"\bpass 2\b", output) and re.search(r"\bfail 0\b", output), output
    for ws in sockets:
        await ws.close()
