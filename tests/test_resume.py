"""Resumption at any distance, without stalling the room, and subscribing at the cost of a storm.

A client that comes back thousands of messages behind gets every one, in order, then the live
ones: history is paced by its socket, not queued against the slow-consumer limit (which here is
32 frames). Subscribing reads the database a few times at most, in batches shared by every
subscription starting at once; what cannot be served (Postgres down) ends with 1013, on which
both Apollo links reconnect and resume."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator

import pytest

from tests.support.graphql import GraphQLClient, create_room, join_room, post_many, post_message, sign_up
from tests.support.processes import SHARED_REDIS_URL, PrivatePostgres, Server, migrate
from tests.support.wsclient import LEGACY_WS, MESSAGE_CREATED, TRANSPORT_WS, GraphQLWebSocket

SEND_QUEUE = 32


@pytest.fixture(scope="module")
def resumable(database_url: str) -> Iterator[Server]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "WS_SEND_QUEUE": str(SEND_QUEUE),
    }
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


async def seqs(subscriber: GraphQLWebSocket, count: int) -> list[int]:
    return [message["seq"] for message in await subscriber.messages("r", count, timeout=30)]


async def test_a_client_thousands_behind_gets_everything_in_order_then_live(resumable: Server) -> None:
    client = GraphQLClient(resumable.url)
    ann = sign_up(client, "Ann")
    room = create_room(client, ann)
    first = post_message(client, ann, room, "first")
    await post_many(resumable.url, ann.token, room, [f"message {i}" for i in range(2999)])

    subscribers = [
        await GraphQLWebSocket.open(resumable.ws_url, p, ann.token) for p in (TRANSPORT_WS, TRANSPORT_WS, LEGACY_WS)
    ]
    for subscriber in subscribers:
        await subscriber.subscribe("r", MESSAGE_CREATED, {"room": room, "after": first["id"]})
    histories = await asyncio.gather(*(seqs(subscriber, 2999) for subscriber in subscribers))
    assert all(history == list(range(2, 3001)) for history in histories)

    post_message(client, ann, room, "live")
    for subscriber in subscribers:
        assert await seqs(subscriber, 1) == [3001]
        assert await subscriber.silent(0.3)
        await subscriber.close()


async def test_resuming_while_the_room_is_busy_has_no_gap_and_no_duplicate(resumable: Server) -> None:
    client = GraphQLClient(resumable.url)
    ann, bob = sign_up(client, "Ann"), sign_up(client, "Bob")
    room = create_room(client, ann)
    join_room(client, bob, room)
    first = post_message(client, ann, room, "first")
    await post_many(resumable.url, ann.token, room, [f"before {i}" for i in range(1499)])
    live = await GraphQLWebSocket.open(resumable.ws_url, TRANSPORT_WS, bob.token)
    await live.subscribe("r", MESSAGE_CREATED, {"room": room})
    await live.barrier()

    posting = asyncio.create_task(post_many(resumable.url, bob.token, room, [f"during {i}" for i in range(400)], 4))
    resuming = [await GraphQLWebSocket.open(resumable.ws_url, p, ann.token) for p in (TRANSPORT_WS, LEGACY_WS)]
    for subscriber in resuming:
        await subscriber.subscribe("r", MESSAGE_CREATED, {"room": room, "after": first["id"]})
    histories = await asyncio.gather(*(seqs(subscriber, 1899) for subscriber in resuming), seqs(live, 400))
    await posting
    assert histories[0] == histories[1] == list(range(2, 1901))
    assert histories[2] == list(range(1501, 1901))
    for subscriber in [*resuming, live]:
        assert await subscriber.silent(0.3)
        await subscriber.close()


@pytest.fixture
def logged() -> Iterator[tuple[PrivatePostgres, Server]]:
    """One worker on a Postgres cluster of the test's own that logs every statement."""
    postgres = PrivatePostgres(settings=("log_statement=all",)).start()
    env = {"DATABASE_URL": postgres.url, "REDIS_URL": ""}
    try:
        migrate(env)
        server = Server(env=env, workers=1).start()
        try:
            yield postgres, server
        finally:
            server.stop()
    finally:
        postgres.remove()


# A connection's presence reads its rooms in the background after the ack (live.presence), at
# a moment a client cannot see: not the subscribe's reading, so not counted.
PRESENCE_READ = "SELECT memberships.user_id, memberships.room_id"


def statements_since(postgres: PrivatePostgres, offset: int) -> list[str]:
    """The statements Postgres executed after `offset` in its log, but presence reads."""
    found = re.findall(r"LOG:  execute [^:]+: (.*)", postgres.log()[offset:])
    return [statement for statement in found if not statement.startswith(PRESENCE_READ)]


async def test_a_resume_reads_little_and_a_burst_of_subscriptions_is_checked_in_batches(
    logged: tuple[PrivatePostgres, Server],
) -> None:
    postgres, server = logged
    client = GraphQLClient(server.url)
    ann = sign_up(client, "Ann")
    room = create_room(client, ann)
    # The room's feed in this worker: from the first message on, however long subscribing takes
    # (subscribing without `after` is live from when the server has it, which a client can't see).
    messages = [post_message(client, ann, room, "m0")]
    first = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, ann.token)
    await first.subscribe("r", MESSAGE_CREATED, {"room": room, "after": messages[0]["id"]})
    messages += [post_message(client, ann, room, f"m{i}") for i in range(1, 5)]
    assert await seqs(first, 4) == [2, 3, 4, 5]

    # A client three messages behind, in a room this worker already serves: the access check (room;
    # token and membership), where `after` is, the same check again once in the feed. The three
    # messages come from the feed's memory.
    again = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, ann.token)
    before = len(postgres.log())
    await again.subscribe("r", MESSAGE_CREATED, {"room": room, "after": messages[1]["id"]})
    assert await seqs(again, 3) == [3, 4, 5]
    statements = statements_since(postgres, before)
    assert len(statements) == 5, statements
    assert not any("ORDER BY" in statement for statement in statements), statements

    # Forty at once: unbatched, that would be 200 statements.
    burst = [await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, ann.token) for _ in range(40)]
    before = len(postgres.log())
    await asyncio.gather(
        *(s.subscribe("r", MESSAGE_CREATED, {"room": room, "after": messages[2]["id"]}) for s in burst)
    )
    assert await asyncio.gather(*(seqs(s, 2) for s in burst)) == [[4, 5]] * 40
    statements = statements_since(postgres, before)
    assert len(statements) < 40, statements
    print(f"40 subscriptions at once: {len(statements)} statements")
    for subscriber in [first, again, *burst]:
        await subscriber.close()


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_subscribing_while_postgres_is_down_closes_with_1013_and_works_once_it_is_back(protocol: str) -> None:
    postgres = PrivatePostgres().start()
    env = {"DATABASE_URL": postgres.url, "REDIS_URL": "", "DATABASE_ACQUIRE_TIMEOUT": "2"}
    try:
        migrate(env)
        server = Server(env=env, workers=1).start()
        try:
            client = GraphQLClient(server.url)
            ann = sign_up(client, "Ann")
            room = create_room(client, ann)
            message = post_message(client, ann, room, "before the outage")
            connected = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
            postgres.stop()
            await connected.subscribe("r", MESSAGE_CREATED, {"room": room, "after": message["id"]})
            assert await connected.close_code(timeout=15) == 1013

            postgres.start()
            resumed = await GraphQLWebSocket.open(server.ws_url, protocol, ann.token)
            await resumed.subscribe("r", MESSAGE_CREATED, {"room": room, "after": message["id"]})
            post_message(client, ann, room, "after the outage")
            assert await seqs(resumed, 1) == [2]
            await resumed.close()
            assert "Exception in ASGI application" not in server.log()
        finally:
            server.stop()
    finally:
        postgres.remove()
