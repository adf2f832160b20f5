"""Webhooks against a receiver on loopback (tests/support/webhooks.py): real gunicorn with two
workers on Postgres and Redis, and the embedded default. Every delivery is checked with the
README's own `verify`; every event arrives, in each room's log order, through failing,
hanging and absent receivers and a SIGTERM and restart of the server; `recipients.offline`
follows who holds an open WebSocket."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from core.settings import load
from db import webhooks
from db.connection import open_database
from tests.support.graphql import (
    Account,
    GraphQLClient,
    create_room,
    join_room,
    post_many,
    post_message,
    sign_up,
)
from tests.support.processes import (
    BASE_ENV,
    POSTGRES_ADMIN_URL,
    ROOT,
    SHARED_REDIS_URL,
    PrivateRedis,
    Server,
    create_database,
    drop_database,
    migrate,
    unique_name,
)
from tests.support.waiting import until, until_sync
from tests.support.webhooks import HANG, Receiver, readme_verify, seq_of, start_worker_logged
from tests.support.wsclient import TRANSPORT_WS, GraphQLWebSocket

SECRETS = ("old-secret", "new-secret")
# Seconds, not hours: the schedule is a setting. The lease must outlast twice the timeout.
FAST = {
    "WEBHOOK_SECRET": " ".join(SECRETS),
    "WEBHOOK_TIMEOUT_SECONDS": "1",
    "WEBHOOK_LEASE_SECONDS": "8",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "WEBHOOK_RETRY_MAX_SECONDS": "1",
    "WEBHOOK_POLL_SECONDS": "0.3",
}
DOWN_SECONDS = 60.0  # how long the receiver is away in the long test: a minute, retried every second or so

ROOM_EVENTS = """
query($room: ID!, $after: String) {
  room(id: $room) {
    events(after: $after, first: 100) { edges { cursor node { __typename } } pageInfo { hasNextPage } }
  }
}"""
EDIT = "mutation($id: ID!, $body: String!) { editMessage(id: $id, body: $body) { id } }"
DELETE = "mutation($id: ID!) { deleteMessage(id: $id) }"
REACT = 'mutation($id: ID!) { react(message: $id, emoji: "👍") { id } }'
UPDATE_ROOM = 'mutation($room: ID!) { updateRoom(room: $room, topic: "orders") { id } }'
SET_ROLE = "mutation($room: ID!, $user: ID!) { setRole(room: $room, user: $user, role: MODERATOR) { role } }"
REMOVE = "mutation($room: ID!, $user: ID!) { removeMember(room: $room, user: $user) }"
LEAVE = "mutation($room: ID!) { leaveRoom(room: $room) }"
MARK_READ = "mutation($room: ID!, $upTo: String!) { markRead(room: $room, upTo: $upTo) { id } }"

TYPE_OF = {
    "MessageCreated": "message.created",
    "MessageEdited": "message.edited",
    "MessageDeleted": "message.deleted",
    "ReactionChanged": "reaction.changed",
    "MemberJoined": "member.joined",
    "MemberLeft": "member.left",
    "MemberRemoved": "member.removed",
    "RoleChanged": "role.changed",
    "RoomUpdated": "room.updated",
    "ReadUpTo": "read.updated",
}


def answer(payload: dict, attempt: int) -> int | str:
    """How the receiver treats a delivery, by a marker in its message's body: `fail3` fails its
    first three tries (500, 429, 408), `slow` hangs past the timeout once, `refuse` gets a 400.
    The body is the message as it is at that attempt (an edit or a delete since shows), so the
    test edits and deletes only `plain` messages: a marked one would change its answers midway."""
    body = (payload["data"].get("message") or {}).get("body", "")
    if payload["type"] == "message.created" and "fail3" in body and attempt <= 3:
        return (500, 429, 408)[attempt - 1]
    if payload["type"] == "message.created" and "slow" in body and attempt == 1:
        return HANG
    if payload["type"] == "message.created" and "refuse" in body:
        return 400
    return 200


def room_log(api: GraphQLClient, account: Account, room: str) -> list[tuple[int, str, str]]:
    """The room's log as the API gives it: (seq, cursor, webhook type) for every event."""
    found, after = [], None
    while True:
        page = api.data(ROOM_EVENTS, {"room": room, "after": after}, account.token)["room"]["events"]
        found += [
            (seq_of(edge["cursor"]), edge["cursor"], TYPE_OF[edge["node"]["__typename"]]) for edge in page["edges"]
        ]
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["edges"][-1]["cursor"]


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = unique_name("chat_hooks")
    url = create_database(name)
    try:
        migrate({"DATABASE_URL": url})
        yield url
    finally:
        drop_database(name)


def _env(database_url: str, receiver: Receiver, prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": prefix,
        "WEBHOOK_URL": receiver.url,
        **FAST,
    }


async def test_every_event_arrives_in_order_through_failures_a_restart_and_an_outage(fresh_database: str) -> None:
    receiver = Receiver(answer=answer, hang_seconds=2.5).start()
    env = _env(fresh_database, receiver, f"test-{uuid.uuid4().hex[:10]}:")
    server = Server(env=env, workers=2).start()
    api = GraphQLClient(server.url)
    try:
        owner, bob, cid = sign_up(api, "Owner"), sign_up(api, "Bob"), sign_up(api, "Cid")
        rooms = [create_room(api, owner, f"room {n}") for n in range(4)]
        for room in rooms:
            join_room(api, bob, room)
            join_room(api, cid, room)
        markers = ["plain", "fail3", "slow", "plain", "refuse", "plain"]

        async def burst(phase: str, count: int) -> list[list[dict]]:
            bodies = [f"{phase} {n} {markers[n % len(markers)]}" for n in range(count)]
            return list(
                await asyncio.gather(*(post_many(api.base_url, owner.token, room, bodies, 3) for room in rooms))
            )

        first = await burst("one", 8)
        # Every other kind of event, in the first room. Only "plain" messages are edited or
        # deleted, picked by body (post_many sends 3 at once, so seq order is not body order): a
        # delivery shows the message as it is now, and `answer` reads its marker from that.
        sent = {created["body"]: created["id"] for created in first[0]}
        message = sent["one 0 plain"]
        api.data(EDIT, {"id": message, "body": "one 0 plain (edited)"}, owner.token)
        api.data(REACT, {"id": message}, bob.token)
        api.data(DELETE, {"id": sent["one 3 plain"]}, owner.token)
        api.data(UPDATE_ROOM, {"room": rooms[0]}, owner.token)
        api.data(SET_ROLE, {"room": rooms[0], "user": bob.id}, owner.token)
        head = room_log(api, owner, rooms[0])[-1][1]
        api.data(MARK_READ, {"room": rooms[0], "upTo": head}, bob.token)
        api.data(REMOVE, {"room": rooms[0], "user": cid.id}, owner.token)
        api.data(LEAVE, {"room": rooms[1]}, bob.token)
        until_sync(lambda: len(receiver.acknowledged()) == len(rooms), "some deliveries in every room", 30)

        # The receiver goes away; events go on; the server is stopped (SIGTERM) and started again.
        receiver.stop()
        down_at = time.monotonic()
        await burst("two", 5)
        assert server.stop() == 0, server.log()[-3000:]
        server = Server(env=env, workers=2).start()
        api.close()
        api = GraphQLClient(server.url)
        await burst("three", 5)
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))  # the outage is what is tested
        receiver.start()

        logs = {room: room_log(api, owner, room) for room in rooms}

        def all_in() -> bool:
            received = {}
            for request in receiver.snapshot():
                received.setdefault(request.room, set()).add(request.seq)
            return all(received.get(room, set()) >= {seq for seq, _, _ in log} for room, log in logs.items())

        until_sync(all_in, "every event of every room at the receiver", 90)
    finally:
        server.stop()
        api.close()
        receiver.stop()

    requests = receiver.snapshot()
    verify = readme_verify()
    for request in requests:
        for secret in SECRETS:  # one v1= per secret: the receiver may hold either
            assert verify(secret, request.headers, request.body), request.headers
        assert not verify("another-secret", request.headers, request.body)
        assert request.headers["X-Chat-Webhook-Id"] == request.payload["id"]
        assert request.headers["content-type"] == "application/json"

    ids: dict[tuple[str, int], set[str]] = {}
    for request in requests:
        ids.setdefault((request.room, request.seq), set()).add(request.payload["id"])
    assert all(len(found) == 1 for found in ids.values()), "duplicates share one id"
    assert len({next(iter(found)) for found in ids.values()}) == len(ids), "an id per event"
    assert len(requests) > len(ids), "some events went more than once"
    # Never one event twice at once (two holders of a room's lease out of step): each attempt
    # arrives after the one before it began to be answered, a 5xx, 429 or 408's at least the
    # backoff's least later; after a hang, once the sender gave up on it (its timeout, 1 s).
    attempts: dict[str, list] = {}
    for request in requests:
        attempts.setdefault(request.payload["id"], []).append(request)
    for tries in attempts.values():
        for before, after in itertools.pairwise(sorted(tries, key=lambda request: request.attempt)):
            if before.answer == HANG:
                assert after.arrived - before.arrived >= 0.5, (before, after)
            else:
                assert before.answering is not None, before
                least = 0.09 if before.answer in (500, 429, 408) else 0.0
                assert after.arrived - before.answering >= least, (before, after)

    for room, log in logs.items():
        in_room = [request for request in requests if request.room == room]
        # Exactly the log, each event with the API's cursor and its type.
        assert {(r.seq, r.payload["cursor"], r.payload["type"]) for r in in_room} == set(log)
        # In order: an event is sent only once the one before it was answered for good.
        answered: set[int] = set()
        for request in in_room:
            assert request.seq == 1 or request.seq - 1 in answered, (room, request.seq, sorted(answered)[-3:])
            if request.answer != HANG and request.answer not in (500, 429, 408):
                answered.add(request.seq)
        assert all(r.payload["room"] == {"id": room, "externalId": None, "kind": "PUBLIC"} for r in in_room)

    created = [r for r in requests if r.payload["type"] == "message.created"]
    by_id: dict[str, list] = {}
    for request in created:
        by_id.setdefault(request.payload["id"], []).append(request)
    by_body = {tries[0].payload["data"]["message"]["body"] + tries[0].room: tries for tries in by_id.values()}
    failing = [tries for body, tries in by_body.items() if "fail3" in body]
    assert failing and all([r.answer for r in tries][:4] == [500, 429, 408, 200] for tries in failing)
    hanging = [tries for body, tries in by_body.items() if "slow" in body]
    assert hanging and all([r.answer for r in tries][:2] == [HANG, 200] for tries in hanging)
    refused = [tries for body, tries in by_body.items() if "refuse" in body]
    assert refused and all([r.answer for r in tries] == [400] for tries in refused), "a 400 is not retried"

    first_room = [r.payload for r in requests if r.room == rooms[0]]
    kinds = {payload["type"] for payload in first_room}
    assert kinds == set(TYPE_OF.values()) - {"member.left"}, kinds
    edited = next(p for p in first_room if p["type"] == "message.edited")["data"]
    assert edited["message"]["body"] == "one 0 plain (edited)" and edited["message"]["sender"]["id"] == owner.id
    reaction = next(p for p in first_room if p["type"] == "reaction.changed")["data"]
    assert reaction["emoji"] == "👍" and reaction["added"] is True and reaction["user"]["id"] == bob.id
    removed = next(p for p in first_room if p["type"] == "member.removed")["data"]
    assert removed["user"]["id"] == cid.id and removed["by"]["id"] == owner.id and removed["banned"] is False
    role = next(p for p in first_room if p["type"] == "role.changed")["data"]
    assert role == {
        "user": {"id": bob.id, "externalId": None},
        "role": "MODERATOR",
        "by": {"id": owner.id, "externalId": None},
    }
    read = next(p for p in first_room if p["type"] == "read.updated")["data"]
    assert read["user"]["id"] == bob.id and read["upTo"] == head
    updated = next(p for p in first_room if p["type"] == "room.updated")["data"]
    assert updated["topic"] == "orders" and updated["kind"] == "PUBLIC" and updated["by"]["id"] == owner.id
    assert any(p["type"] == "member.left" and p["data"]["user"]["id"] == bob.id for p in (r.payload for r in requests))


async def _gql(http: httpx.AsyncClient, query: str, variables: dict, token: str) -> dict:
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {token}"}
    )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


CREATE = "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }"


async def _created(receiver: Receiver, body: str) -> dict:
    """The acknowledged message.created delivery of the message with this body."""
    found: list[dict] = []

    def arrived() -> bool:
        found[:] = [
            r.payload
            for r in receiver.snapshot()
            if r.acknowledged
            and r.payload["type"] == "message.created"
            and r.payload["data"]["message"]["body"] == body
        ]
        return bool(found)

    await until(arrived, f"the delivery of {body!r}", 20)
    return found[-1]


async def test_offline_recipients_are_the_members_without_an_open_connection(fresh_database: str) -> None:
    receiver = Receiver().start()
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    server = Server(env=_env(fresh_database, receiver, prefix), workers=2).start()
    api = GraphQLClient(server.url)
    shared = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        sender, online, away, later = (sign_up(api, name) for name in ("Sender", "Online", "Away", "Later"))
        room = create_room(api, sender)
        for member in (online, away, later):
            join_room(api, member, room)
        outsider = sign_up(api, "Outsider")  # connected, but no member: never listed
        joiner = sign_up(api, "Joiner")  # joins between the two messages
        # The host's ids, as its service API sets them (users.external_id, rooms.external_id).
        _sql(fresh_database, f"UPDATE users SET external_id = 'host-away' WHERE id = {away.id}")
        _sql(fresh_database, f"UPDATE rooms SET external_id = 'order-7' WHERE id = {room}")
        sockets = [await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, user.token) for user in (online, outsider)]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await _gql(http, CREATE, {"room": room, "body": "first"}, sender.token)
            payload = await _created(receiver, "first")
            assert payload["recipients"] == {
                "offline": [{"id": away.id, "externalId": "host-away"}, {"id": later.id, "externalId": None}],
                "complete": True,
            }
            assert payload["room"] == {"id": room, "externalId": "order-7", "kind": "PUBLIC"}
            assert payload["data"]["message"]["sender"] == {"id": sender.id, "externalId": None}
            # `online` goes away (its slot leaves Redis), `later` connects.
            await sockets[0].close()
            key = f"{prefix}live:connections:{online.id}"
            await until(lambda: shared.zcard(key) == 0, "the closed connection's slot given back")
            sockets.append(await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, later.token))
            # A member who joined since the members were last read (the room's lease still held,
            # its members kept between its pages) is listed: the join is in the log before.
            join_room(api, joiner, room)
            await _gql(http, CREATE, {"room": room, "body": "second"}, sender.token)
            payload = await _created(receiver, "second")
            assert [user["id"] for user in payload["recipients"]["offline"]] == [online.id, away.id, joiner.id]
            edited = 'mutation($id: ID!) { editMessage(id: $id, body: "second!") { id } }'
            message = payload["data"]["message"]["id"]
            await _gql(http, edited, {"id": message}, sender.token)
            await until(
                lambda: any(r.payload["type"] == "message.edited" for r in receiver.snapshot()), "the edit delivered"
            )
            assert all(
                "recipients" not in r.payload for r in receiver.snapshot() if r.payload["type"] != "message.created"
            )
        for socket in sockets[1:]:
            await socket.close()
    finally:
        server.stop()
        api.close()
        receiver.stop()
        shared.close()


async def test_the_embedded_default_delivers_too(tmp_path: Path) -> None:
    """SQLite, no Redis, one worker: signed, retried, in order, with offline recipients known
    from the process's own connections."""
    receiver = Receiver(answer=lambda payload, attempt: 503 if attempt == 1 else 200).start()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "REDIS_URL": "", "WEBHOOK_URL": receiver.url, **FAST}
    migrate(env)
    server = Server(env=env, workers=1).start()
    api = GraphQLClient(server.url)
    try:
        owner, online, away = sign_up(api, "Owner"), sign_up(api, "Online"), sign_up(api, "Away")
        room = create_room(api, owner)
        join_room(api, online, room)
        join_room(api, away, room)
        socket = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, online.token)
        bodies = [f"m{n}" for n in range(6)]
        for body in bodies:
            post_message(api, owner, room, body)
        log = room_log(api, owner, room)
        await until(
            lambda: {r.seq for r in receiver.snapshot() if r.acknowledged} >= {seq for seq, _, _ in log},
            "every event acknowledged",
            30,
        )
        await socket.close()
    finally:
        server.stop()
        api.close()
        receiver.stop()
    requests = receiver.snapshot()
    verify = readme_verify()
    assert all(verify("new-secret", r.headers, r.body) for r in requests)
    acknowledged = [r for r in requests if r.acknowledged]
    assert [r.seq for r in acknowledged] == [seq for seq, _, _ in log], "each once, in order"
    assert all(r.attempt == 2 for r in acknowledged), "each failed once (503) first"
    created = [r.payload for r in acknowledged if r.payload["type"] == "message.created"]
    assert [p["data"]["message"]["body"] for p in created] == bodies
    assert all(p["recipients"] == {"offline": [{"id": away.id, "externalId": None}], "complete": True} for p in created)


SERVICE_KEY = "webhook-status-" + "k" * 32  # the host's server reads the status
STATUS = """{ webhookStatus { endpoint backlog rooms failing oldestUndeliveredAt lastError lastErrorAt } }"""


async def _status(database_url: str, urls: list[str]) -> list[dict]:
    """db.webhooks.status, what `webhookStatus` serves the host's server (read directly where
    the test's server has stopped)."""
    db = open_database(load({"DATABASE_URL": database_url}))
    await db.connect()
    try:
        return await webhooks.status(db, {webhooks.endpoint_key(url): webhooks.endpoint_label(url) for url in urls})
    finally:
        await db.disconnect()


async def test_the_status_shows_a_stuck_receiver_and_its_backlog_drains(fresh_database: str) -> None:
    receiver = Receiver()  # not started: connections refused
    env = {**_env(fresh_database, receiver, f"test-{uuid.uuid4().hex[:10]}:"), "SERVICE_KEY": SERVICE_KEY}
    server = Server(env=env, workers=2).start()
    api = GraphQLClient(server.url)
    try:
        owner = sign_up(api, "Owner")
        rooms = [create_room(api, owner, f"room {n}") for n in range(2)]
        for room in rooms:
            for n in range(3):
                post_message(api, owner, room, f"m{n}")
        found: list[dict] = []

        async def both_failing() -> bool:
            found[:] = api.data(STATUS, token=SERVICE_KEY)["webhookStatus"]
            return found[0]["failing"] == 2

        await until(both_failing, "both rooms waiting for a retry", 20)
        (status,) = found
        assert status["endpoint"] == receiver.url and status["backlog"] == 8 and status["rooms"] == 2, status
        assert "ConnectError" in status["lastError"] and status["lastError"].startswith("seq 1:"), status
        assert status["oldestUndeliveredAt"] is not None and status["lastErrorAt"] >= status["oldestUndeliveredAt"]
        assert api.error_codes(STATUS, token=owner.token) == ["FORBIDDEN"]
        assert api.error_codes(STATUS) == ["UNAUTHENTICATED"]
        assert httpx.get(f"{server.url}/readyz").status_code == 200, "readiness knows nothing of receivers"
        # A user's mutations answer as fast with the receiver away: nothing waits on it.
        started = time.monotonic()
        post_message(api, owner, rooms[0], "still fast")
        assert time.monotonic() - started < 1.0

        receiver.start()

        async def drained() -> bool:
            found[:] = api.data(STATUS, token=SERVICE_KEY)["webhookStatus"]
            return found[0]["backlog"] == 0

        await until(drained, "the backlog delivered", 20)
        assert found[0]["failing"] == 0 and found[0]["oldestUndeliveredAt"] is None and found[0]["rooms"] == 0
        assert len({(r.room, r.seq) for r in receiver.snapshot()}) == 9
    finally:
        server.stop()
        api.close()
        receiver.stop()


async def test_a_worker_process_takes_deliveries_over(fresh_database: str) -> None:
    """WEBHOOK_IN_WEB=0 on the web workers, `python -m composition.webhooks` (the Procfile's
    optional worker line) delivering; SIGTERM stops it."""
    receiver = Receiver().start()
    env = {**_env(fresh_database, receiver, f"test-{uuid.uuid4().hex[:10]}:"), "WEBHOOK_IN_WEB": "0"}
    server = Server(env=env, workers=2).start()
    api = GraphQLClient(server.url)
    worker: subprocess.Popen | None = None
    try:
        owner = sign_up(api, "Owner")
        room = create_room(api, owner)
        for n in range(3):
            post_message(api, owner, room, f"before {n}")
        assert _registered(fresh_database) == 0, "the web workers deliver nothing"
        worker = _start_worker(env)
        # A process's start (its imports) takes seconds on a loaded machine.
        await until(lambda: _registered(fresh_database) == 1, "the worker registered the endpoint", 30)
        for n in range(3):
            post_message(api, owner, room, f"after {n}")
        log = room_log(api, owner, room)
        await until(lambda: len(receiver.snapshot()) >= 3, "the worker's deliveries", 20)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(10) == 0
        server.stop()
        api.close()
        receiver.stop()
    # Registered by the worker when it started: it hears what happened from then on.
    seqs = [r.seq for r in receiver.snapshot()]
    assert seqs == sorted(seqs) and seqs[-1] == log[-1][0] and len(seqs) == len(set(seqs))
    bodies = [
        r.payload["data"]["message"]["body"] for r in receiver.snapshot() if r.payload["type"] == "message.created"
    ]
    assert bodies == ["after 0", "after 1", "after 2"]


LONG_POLL = 120.0  # the worker's poll in the wake-up test: far longer than the test runs


async def test_a_worker_delivers_each_commit_at_once_not_at_its_poll(fresh_database: str) -> None:
    """The worker hears the room events the web workers publish on Redis and delivers each at
    once. Its poll is two minutes: it sweeps once when it starts, and each room here is created,
    and then gets its first message, only after the previous delivery arrived, so after that
    sweep: only a wake-up can deliver each room's creation (its creator's member.joined) and
    each message within seconds."""
    receiver = Receiver().start()
    env = {
        **_env(fresh_database, receiver, f"test-{uuid.uuid4().hex[:10]}:"),
        "WEBHOOK_IN_WEB": "0",
        "WEBHOOK_POLL_SECONDS": str(LONG_POLL),
    }
    server = Server(env=env, workers=2).start()
    api = GraphQLClient(server.url)
    worker, logs = start_worker_logged(env)
    started = time.monotonic()
    try:
        owner = sign_up(api, "Owner")
        await until(lambda: any("Hearing room events" in line for line in logs), "the worker hears room events", 30)
        await until(lambda: _registered(fresh_database) == 1, "the worker registered the endpoint", 30)
        waits = []
        for n in range(3):
            for kind in ("member.joined", "message.created"):
                if kind == "member.joined":
                    room = create_room(api, owner, f"woken {n}")
                else:
                    post_message(api, owner, room, f"woken {n}")
                committed = time.monotonic()

                def arrived(room: str = room, kind: str = kind) -> bool:
                    return any(r.room == room and r.payload["type"] == kind for r in receiver.snapshot())

                await until(arrived, f"room {n}'s {kind}", 10)
                waits.append(time.monotonic() - committed)
        assert time.monotonic() - started < LONG_POLL / 2
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
        server.stop()
        api.close()
        receiver.stop()
    assert all(wait < 10 for wait in waits), waits
    # Each room's log in order: its creator joined, then the message.
    rooms: dict[str, list[str]] = {}
    for request in receiver.snapshot():
        rooms.setdefault(request.room, []).append(request.payload["type"])
    assert list(rooms.values()) == [["member.joined", "message.created"]] * 3, rooms


def _start_worker(env: dict[str, str]) -> subprocess.Popen:
    """The Procfile's optional `worker: python -m composition.webhooks`."""
    return subprocess.Popen(
        [sys.executable, "-m", "composition.webhooks"], cwd=ROOT, env={**os.environ, **BASE_ENV, **env}
    )


def _sql(database_url: str, statement: str) -> str:
    name = database_url.rsplit("/", 1)[1]
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    return subprocess.run(["psql", url, "-Atqc", statement], check=True, capture_output=True, text=True).stdout.strip()


def _registered(database_url: str) -> int:
    return int(_sql(database_url, "SELECT count(*) FROM webhook_endpoints"))


def test_migration_0009_webhooks_goes_up_down_and_up_on_sqlite(tmp_path: Path) -> None:
    """Only its own two tables, on a database at 0008_host."""
    path = tmp_path / "chat.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}"}

    def alembic(step: str, revision: str) -> None:
        code = "from alembic import command; from db.migrate import alembic_config as c; "
        code += f"command.{step}(c(), {revision!r})"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)

    def tables() -> set[str]:
        with sqlite3.connect(path) as connection:
            return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    alembic("upgrade", "0008_host")
    before = tables()
    alembic("upgrade", "0009_webhooks")
    assert tables() == before | {"webhook_endpoints", "webhook_deliveries"}
    alembic("downgrade", "0008_host")
    assert tables() == before
    alembic("upgrade", "0009_webhooks")
    assert tables() == before | {"webhook_endpoints", "webhook_deliveries"}


async def test_deliveries_go_on_while_redis_is_away_with_offline_recipients_marked_incomplete(
    fresh_database: str,
) -> None:
    """Delivery needs only Postgres. Without Redis, who is connected elsewhere is unknown: the
    members are listed (nobody missed) and `complete` is false; once Redis is back (and the
    workers' leases renewed into it), it is exact again."""
    receiver = Receiver().start()
    own_redis = PrivateRedis().start()
    env = {**_env(fresh_database, receiver, f"test-{uuid.uuid4().hex[:10]}:"), "REDIS_URL": own_redis.url}
    server = Server(env={**env, "LIVE_LEASE_SECONDS": "3"}, workers=2).start()
    api = GraphQLClient(server.url)
    try:
        sender, online, away = sign_up(api, "Sender"), sign_up(api, "Online"), sign_up(api, "Away")
        room = create_room(api, sender)
        join_room(api, online, room)
        join_room(api, away, room)
        socket = await GraphQLWebSocket.open(server.ws_url, TRANSPORT_WS, online.token)
        post_message(api, sender, room, "before")
        payload = await _created(receiver, "before")
        assert payload["recipients"] == {"offline": [{"id": away.id, "externalId": None}], "complete": True}

        own_redis.stop()
        post_message(api, sender, room, "during")
        payload = await _created(receiver, "during")
        assert payload["recipients"]["complete"] is False
        offline = [user["id"] for user in payload["recipients"]["offline"]]
        assert away.id in offline and sender.id not in offline

        own_redis = PrivateRedis(port=own_redis.port).start()
        posted = 0

        async def exact_again() -> bool:
            nonlocal posted
            posted += 1
            post_message(api, sender, room, f"after {posted}")
            recipients = (await _created(receiver, f"after {posted}"))["recipients"]
            return recipients == {"offline": [{"id": away.id, "externalId": None}], "complete": True}

        await until(exact_again, "exact recipients once Redis is back", 30)
        await socket.close()
    finally:
        server.stop()
        api.close()
        receiver.stop()
        own_redis.stop()


async def test_an_event_failing_past_the_retry_window_is_skipped_and_recorded(tmp_path: Path) -> None:
    """WEBHOOK_RETRY_FOR_SECONDS (3 days by default; 1 s here): then the next event goes."""
    receiver = Receiver(answer=lambda payload, _attempt: 503 if "doomed" in json.dumps(payload) else 200).start()
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    env = {"DATABASE_URL": url, "REDIS_URL": "", "WEBHOOK_URL": receiver.url, **FAST, "WEBHOOK_RETRY_FOR_SECONDS": "1"}
    migrate(env)
    server = Server(env=env, workers=1).start()
    api = GraphQLClient(server.url)
    try:
        owner = sign_up(api, "Owner")
        room = create_room(api, owner)
        post_message(api, owner, room, "doomed")
        post_message(api, owner, room, "next")
        await _created(receiver, "next")
    finally:
        server.stop()
        api.close()
        receiver.stop()
    doomed = [r for r in receiver.snapshot() if "doomed" in r.body.decode()]
    assert len(doomed) >= 3 and {r.answer for r in doomed} == {503} and len({r.payload["id"] for r in doomed}) == 1
    (status,) = await _status(url, [receiver.url])
    assert status["backlog"] == 0 and status["last_error"].startswith(f"seq {doomed[0].seq}: gave up after"), status
