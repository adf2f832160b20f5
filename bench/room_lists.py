"""Room lists under load, on the real stack (the Procfile's gunicorn, 2 workers, Postgres,
Redis), each beside what it is measured against in the same run:

- `myRooms` fan-out: a room of 1,000 members, each a user of their own holding only `myRooms`
  and selecting `room { unreadCount lastMessage { body } }`, each with an unread count of their
  own (every member posted once and read up to their own post, one after another: no two read
  to the same point, so no two results are alike), against `messageCreated` at S=1000 (the same
  room size, 20 accounts), both at 20 messages per second from one sender who holds neither.
  In pairs of rounds whose order alternates (A B, B A: a machine that slows or speeds up over
  the run weighs on both sides alike): server CPU per delivery and latency, by round and over
  all rounds, and the median of the pairs' ratios. A `myRooms` delivery is timed from the send
  time of the message it shows as `lastMessage`: a note executed after a later message
  committed shows that later one (counted apart, as "showing a later message").
- `rooms` for a user in 1,000 rooms, each with a message from someone else, with a room list's
  selection (ROOM_LIST: what a client's room list shows of each room, and its last message with
  its sender) at the first page the web client asks for (its `MyRooms` query's `first`, read from
  web/src/operations.graphql: a room list's request is its first page), and at `first: 500`, the
  largest page `rooms` serves (lists are bounded at 500), both against `{ me { ... } }`:
  requests per second, 50 clients, warmed up, in rounds whose order turns, the clients'
  connections opened a few milliseconds apart (bench.loadgen.http_load), with how they fell on
  the two workers in each round.

Members are made in the database directly (db.users, as signUp makes them, with one password
hash for all: a thousand argon2 hashes would be most of the run); everything else goes through
the API.

    python -m bench.room_lists [--quick]     # also a part of `make bench`

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import orjson
from databases import Database

from bench.loadgen import (
    Subscriber,
    alternating,
    collector_paused,
    percentile,
    pooled,
    publish,
    row,
    show,
    tree_cpu_seconds,
    turned_rounds,
    until_read,
)
from bench.run import FanOut, Stack, fresh_stack, tally
from db import users
from identity import auth

MY_ROOMS = "subscription { myRooms { change roomId room { unreadCount lastMessage { body } } } }"
# A room list's selection: every room's face in the list, its last message and who sent it.
ROOM_FIELDS = (
    "id name kind topic unreadCount latestEventCursor myRole memberCount "
    "lastMessage { id body createdAt sender { id name } }"
)
ME = "{ me { id name avatar(size: 32) } }"
PAGE = 500  # `rooms` serves at most 500 a page (resolvers.lists.MAX_LIST)
OPERATIONS = Path(__file__).resolve().parent.parent / "web" / "src" / "operations.graphql"
PAIRS = 2  # even: each order as often
MESSAGES = 400  # per round and side: 20 s at 20 per second
CPU = "server CPU per delivery (us)"
JOIN = "mutation($r: ID!) { joinRoom(room: $r) { id } }"
CREATE_ROOM = 'mutation { createRoom(name: "listed", kind: PUBLIC) { id } }'
POST_AND_HEAD = 'mutation($r: ID!) { createMessage(room: $r, body: "earlier") { room { latestEventCursor } } }'
MARK_READ = "mutation($r: ID!, $c: String!) { markRead(room: $r, upTo: $c) { id } }"
POST = "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { id } }"


@dataclass
class MyRoomsFanOut(FanOut):
    later: int = 0  # notes showing a later message than the one they were published for
    distinct_counts: int = 0  # how many different unread counts the members' first notes showed


def room_list(first: int) -> str:
    return f"{{ rooms(first: {first}) {{ {ROOM_FIELDS} }} }}"


def client_page() -> int:
    """The `first` of the web client's room list query (`MyRooms`): the page it asks for first."""
    found = re.search(r"query MyRooms\b[^{]*\{\s*rooms\(first: (\d+)", OPERATIONS.read_text())
    if found is None:
        raise SystemExit(f"no `rooms(first: N` in MyRooms of {OPERATIONS}")
    return int(found.group(1))


class MyRoomsSubscriber(Subscriber):
    """One member's `myRooms`: each note is one result, timed from the send time leading its
    `lastMessage`'s body."""

    def __init__(self) -> None:
        super().__init__()
        self.notes = 0
        self.newest = -1  # the highest message index shown so far
        self.later = 0  # notes showing a message later than the one before them plus one
        self.first_count: int | None = None  # the unread count in the first note

    @classmethod
    async def open_my_rooms(cls, ws_url: str, token: str) -> Self:
        subscriber = await cls.connect(ws_url, token)
        subscriber.send_text({"id": "1", "type": "subscribe", "payload": {"query": MY_ROOMS}})
        return subscriber

    def on_message(self, payload: bytes, received: float) -> None:
        frame = orjson.loads(payload)
        if frame["type"] != "next":
            super().on_message(payload, received)  # the protocol's own frames
            return
        note = (frame["payload"].get("data") or {}).get("myRooms")
        message = ((note or {}).get("room") or {}).get("lastMessage")
        if not message or "errors" in frame["payload"]:
            self.errors += 1
            return
        if self.first_count is None:
            self.first_count = note["room"]["unreadCount"]
        sent, _, rest = message["body"].partition(" message ")
        index = int(rest)
        self.later += index > self.newest + 1
        self.newest = max(self.newest, index)
        self._seen[str(self.notes)] = 1  # each note is a delivery of its own
        self.notes += 1
        self._latencies.append(received - float(sent))


async def make_members(database_url: str, count: int) -> list[str]:
    """`count` users and a token each, made as signUp makes them (one password hash for all)."""
    database = Database(database_url)
    await database.connect()
    try:
        password_hash = await auth.hash_password("benchmark!")
        tokens = []
        for i in range(count):
            email = f"member{i}-{uuid.uuid4().hex[:8]}@example.com"
            user = await users.create_user(database, f"member {i}", email, auth.email_hash(email), password_hash)
            token = auth.new_token()
            await users.create_token(database, user["id"], auth.token_digest(token), auth.DEFAULT_POLICY.expiry())
            tokens.append(token)
        return tokens
    finally:
        await database.disconnect()


async def each(stack: Stack, calls: list[tuple[str, dict, str]], at_once: int = 16) -> list[dict]:
    """Every (query, variables, token) through the API, `at_once` at a time; their data, in order."""
    gate = asyncio.Semaphore(at_once)
    async with httpx.AsyncClient(base_url=stack.server.url, timeout=60) as http:

        async def one(query: str, variables: dict, token: str) -> dict:
            async with gate:
                headers = {"Authorization": f"Bearer {token}"}
                body = (
                    await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
                ).json()
                assert "errors" not in body, body
                return body["data"]

        return list(await asyncio.gather(*(one(*call) for call in calls)))


async def own_unread_counts(stack: Stack, room: str, members: list[str]) -> None:
    """Each member posts once, then reads up to their own post: their unread counts (others'
    posts after theirs, and every message after) all differ."""
    posted = await each(stack, [(POST_AND_HEAD, {"r": room}, token) for token in members], at_once=1)
    heads = [data["createMessage"]["room"]["latestEventCursor"] for data in posted]
    await each(stack, [(MARK_READ, {"r": room, "c": head}, token) for head, token in zip(heads, members, strict=True)])


async def my_rooms(stack: Stack, room: str, members: list[str], rate: float, count: int) -> MyRoomsFanOut:
    """Every member's `myRooms` open, then `count` messages at `rate` from the stack's first
    account (a member holding no `myRooms`): what the members received, and the server's CPU."""
    result = MyRoomsFanOut("myRooms", len(members), 1, rate, count)
    subs: list[MyRoomsSubscriber] = []
    for start in range(0, len(members), 100):
        subs += await asyncio.gather(
            *(MyRoomsSubscriber.open_my_rooms(stack.server.ws_url, token) for token in members[start : start + 100])
        )
    await asyncio.sleep(2)
    cpu_before = tree_cpu_seconds(stack.pid)
    with collector_paused():
        acknowledged = await publish(stack.server.url, stack.tokens[0], [room], count, rate)
        result.failed_posts = count - len(acknowledged)
        result.expected = len(acknowledged) * len(subs)
        await until_read(subs, result.expected)
    result.latencies = tally(result, subs, tree_cpu_seconds(stack.pid) - cpu_before)
    result.error_frames = sum(sub.errors for sub in subs)
    result.later = sum(sub.later for sub in subs)
    result.distinct_counts = len({sub.first_count for sub in subs})
    for sub in subs:
        sub.close()
    await asyncio.sleep(1)
    return result


async def room_lists(stack: Stack, token: str, rooms: int, seconds: float, rounds: int = 2) -> dict[str, float | str]:
    """A user (`token`, in no room yet) in `rooms` rooms, each with a message from its creator,
    asking for their room list, at the web client's first page and at the largest page, against
    `me`, 50 clients each: after a warm-up of each, in rounds whose order turns (A B C, C B A)."""
    creator = stack.tokens[1]
    created = await each(stack, [(CREATE_ROOM, {}, creator)] * rooms)
    ids = [data["createRoom"]["id"] for data in created]
    await each(stack, [(JOIN, {"r": room}, token) for room in ids])
    await each(stack, [(POST, {"r": room, "b": f"hello {i}"}, creator) for i, room in enumerate(ids)])
    stack.analyze()
    pages = {"first page": min(client_page(), rooms), "largest page": min(PAGE, rooms)}
    for page in pages.values():
        listed = stack.gql(room_list(page), token=token)["rooms"]
        assert len(listed) == page and all(room["lastMessage"] and room["unreadCount"] == 1 for room in listed)
    queries = {"me": ME, **{name: room_list(page) for name, page in pages.items()}}
    result = await turned_rounds(stack.pid, stack.server.url, token, queries, seconds, rounds)
    rps = {name: result.per_second(name) for name in queries}
    figures: dict[str, float | str] = {
        **result.splits_by_round(),
        "`me`: requests per second": rps["me"],
        "  latency p50 / p99 (ms)": _p50_p99(result.latencies["me"]),
    }
    for name, page in pages.items():
        figures[f"room list, {name}, {page} of {rooms} rooms: requests per second"] = rps[name]
        figures[f"  latency p50 / p99 (ms), {name}"] = _p50_p99(result.latencies[name])
        figures[f"  ratio to `me`, {name}" + (" (target at least 0.25)" if name == "first page" else "")] = (
            rps[name] / rps["me"]
        )
    figures["errors"] = result.errors
    return figures


def _p50_p99(latencies: list[float]) -> str:
    return f"{percentile(latencies, 0.5) * 1000:.1f} / {percentile(latencies, 0.99) * 1000:.1f}"


async def main(quick: bool, only: str | None, messages_per_round: int | None) -> None:
    scale = 5 if quick else 1
    size = 1000 // scale
    with fresh_stack("rooms_bench") as stack:
        if only != "rooms":
            members = await make_members(stack.database_url, size)
            room = stack.rooms(1)[0]  # the stack's accounts are in it: the sender among them
            await each(stack, [(JOIN, {"r": room}, token) for token in members])
            await own_unread_counts(stack, room, members)
            await stack.fan_out(200 // scale, 1, 20.0, 40 // scale, "messageCreated")  # warm-up
            await my_rooms(stack, room, members[: 200 // scale], 20.0, 40 // scale)  # warm-up
            per_round = messages_per_round or MESSAGES // scale
            rounds = await alternating(
                PAIRS,
                lambda: stack.fan_out(size, 1, 20.0, per_round, "messageCreated"),
                lambda: my_rooms(stack, room, members, 20.0, per_round),
            )
            print(f"\nS={size}, 20 messages per second, same run, {PAIRS} pairs of rounds of {per_round} messages")
            print(f"  {'':34} {'messageCreated':>15} {'myRooms':>15} {'myRooms/msgs':>13}")
            for number, (messages, listed) in enumerate(rounds, start=1):
                print(f"  pair {number} ({'messageCreated first' if number % 2 else 'myRooms first'})")
                row("missing", messages.missing, listed.missing)
                row("error frames", messages.error_frames, listed.error_frames)
                row("showing a later message", 0, listed.later)
                row("different unread counts, first note", 0, listed.distinct_counts)
                row("latency p50 (ms)", messages.p50_ms, listed.p50_ms)
                row("latency p99 (ms)", messages.p99_ms, listed.p99_ms)
                row(CPU, messages.cpu_us_per_delivery, listed.cpu_us_per_delivery)
            pooled(rounds, "myRooms/messageCreated", (("latency p99", "p99_ms"), (CPU, "cpu_us_per_delivery")))
            print("  (target: myRooms' CPU per delivery at most 2x messageCreated's)")
        if only != "myrooms":
            lister = (await make_members(stack.database_url, 1))[0]
            show(
                f"Room list against `me`, 50 clients, a user in {size} rooms, same run, rounds in turned order",
                await room_lists(stack, lister, size, 20.0 / scale),
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the load, for a smoke run")
    parser.add_argument("--only", choices=("myrooms", "rooms"), help="one part alone")
    parser.add_argument("--messages", type=int, help="messages per fan-out round (400; 80 with --quick)")
    arguments = parser.parse_args()
    import uvloop

    uvloop.run(main(arguments.quick, arguments.only, arguments.messages))
