"""The chat features under load, on the real stack (the Procfile's gunicorn, 2 workers, Postgres,
Redis), each beside what it is measured against in the same run:

- `roomEvents` at S=1000 and 20 events/s, 70% messages, 20% reactions, 10% edits, against
  `messageCreated` at S=1000 and 20 messages/s, in pairs of rounds whose order alternates
  (A B, B A, ...: a machine that slows or speeds up over the run weighs on both sides alike, where
  A B, A B put every B later than its A): server CPU per delivery and latency, by round, over all
  rounds (a p99 over one round's 400 events is set by its few slowest), and the median of the
  pairs' ratios;
- typing heartbeats from 100 users in one room, one every 3 s each: Redis commands per second
  and server CPU;
- `{ rooms { id unreadCount } }` for a user in 100 rooms against `{ me { ... } }`, 50 clients:
  requests per second, warmed up, in rounds whose order turns, the clients' connections opened a few
  milliseconds apart (bench.loadgen.http_load), with how they fell on the two workers in each
  round: all on one worker would leave `me` one core, while the unread query's Postgres has
  the other.

    python -m bench.chat_features [--quick]     # also a part of `make bench`

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import httpx
import orjson
from redis import asyncio as aioredis

from bench.loadgen import (
    Subscriber,
    alternating,
    collector_paused,
    open_subscribers,
    paced,
    pooled,
    row,
    show,
    tree_cpu_seconds,
    turned_rounds,
    until_read,
)
from bench.run import FanOut, Stack, fresh_stack, tally
from tests.support.processes import SHARED_REDIS_URL

CREATE = "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { id } }"
EDIT = "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id } }"
REACT = "mutation($m: ID!, $e: String!) { react(message: $m, emoji: $e) { id } }"
UNREAD = "{ rooms { unreadCount } }"  # the query
UNREAD_WITH_IDS = "{ rooms { id unreadCount } }"  # what a client asks to match counts to rooms
ME = "{ me { id name avatar(size: 32) } }"
IDLE_SECONDS = 5.0
PAIRS = 4  # even: each order as often
EVENTS = 400  # per round and side: 20 s at 20 per second
CPU = "server CPU per delivery (us)"


class EventSubscriber(Subscriber):
    """Counts roomEvents by cursor; each event's send time rides in its body (messages, edits)
    or in its short name (reactions: `:t<ms>:`)."""

    def on_message(self, payload: bytes, received: float) -> None:
        frame = orjson.loads(payload)
        if frame["type"] != "next":
            super().on_message(payload, received)  # the protocol's own frames
            return
        event = (frame["payload"].get("data") or {}).get("roomEvents")
        if not event or "errors" in frame["payload"]:
            self.errors += 1
            return
        self._seen[event["cursor"]] = self._seen.get(event["cursor"], 0) + 1
        if "emoji" in event:
            sent = int(event["emoji"][2:-1]) / 1000
        else:
            sent = float(event["message"]["body"].split(" ", 1)[0])
        self._latencies.append(received - sent)


async def mixed(stack: Stack, subscribers: int, rate: float, count: int) -> FanOut:
    """The mix at `rate` events per second: every 10 events, 7 messages, 2 reactions, 1 edit of
    the last messages; what the subscribers received, and the server's CPU, as `Stack.fan_out`
    tallies them."""
    result = FanOut("roomEvents mix", subscribers, 1, rate, count)
    room = stack.rooms(1)[0]
    subs = await open_subscribers(
        stack.server.ws_url, stack.tokens, [room], subscribers, "roomEventsMix", EventSubscriber
    )
    await asyncio.sleep(2)
    cpu_before = tree_cpu_seconds(stack.pid)
    with collector_paused():
        acknowledged = await send_mix(stack, room, rate, count)
        result.failed_posts = count - acknowledged
        result.expected = acknowledged * subscribers
        await until_read(subs, result.expected)
    result.latencies = tally(result, subs, tree_cpu_seconds(stack.pid) - cpu_before)
    result.error_frames = sum(sub.errors for sub in subs)
    for sub in subs:
        sub.close()
    await asyncio.sleep(1)
    return result


async def send_mix(stack: Stack, room: str, rate: float, count: int) -> int:
    """`count` events at `rate` per second, 16 at most at once; how many were acknowledged."""
    rng = random.Random(5)
    mine: list[str] = []  # tokens[0]'s messages: only their sender edits them
    acknowledged = 0
    async with httpx.AsyncClient(base_url=stack.server.url, timeout=60) as http:
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            nonlocal acknowledged
            kind = i % 10
            async with gate:
                now = time.time()
                if kind < 7 or not mine:
                    query, variables, token = CREATE, {"r": room, "b": f"{now:.6f} message {i}"}, stack.tokens[0]
                elif kind < 9:
                    reactor = stack.tokens[1 + rng.randrange(len(stack.tokens) - 1)]
                    query, variables, token = (
                        REACT,
                        {"m": rng.choice(mine[-20:]), "e": f":t{int(now * 1000)}:"},
                        reactor,
                    )
                else:
                    query, variables, token = (
                        EDIT,
                        {"id": rng.choice(mine[-20:]), "b": f"{now:.6f} edited {i}"},
                        stack.tokens[0],
                    )
                headers = {"Authorization": f"Bearer {token}"}
                body = (
                    await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
                ).json()
                if body.get("data"):
                    acknowledged += 1
                    if query == CREATE:
                        mine.append(body["data"]["createMessage"]["id"])

        await paced(count, rate, one)
    return acknowledged


async def typing(stack: Stack, users: int, every: float, seconds: float) -> dict[str, float]:
    """`users` in one room, each sending a typing heartbeat every `every` seconds."""
    room = stack.rooms(1)[0]
    tokens = [stack.sign_up(1000 + i) for i in range(users)]
    for token in tokens:
        stack.gql("mutation($r: ID!) { joinRoom(room: $r) { id } }", {"r": room}, token)
    redis = aioredis.Redis.from_url(SHARED_REDIS_URL)
    refused = 0

    async def typist(token: str, offset: float) -> None:
        nonlocal refused
        async with httpx.AsyncClient(base_url=stack.server.url, timeout=30) as http:
            await asyncio.sleep(offset)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                variables = {"r": room}
                body = (
                    await http.post(
                        "/graphql",
                        json={"query": "mutation($r: ID!) { typing(room: $r) }", "variables": variables},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                ).json()
                refused += "errors" in body
                await asyncio.sleep(every)

    # What the idle server spends meanwhile (revocation heartbeats, timers) is not the typing's.
    idle_cpu, idle_started = tree_cpu_seconds(stack.pid), time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    idle_rate = (tree_cpu_seconds(stack.pid) - idle_cpu) / (time.monotonic() - idle_started)
    before = int((await redis.info("stats"))["total_commands_processed"])
    cpu_before, started = tree_cpu_seconds(stack.pid), time.monotonic()
    await asyncio.gather(*(typist(token, i * every / users) for i, token in enumerate(tokens)))
    elapsed = time.monotonic() - started
    commands = int((await redis.info("stats"))["total_commands_processed"]) - before
    cpu = tree_cpu_seconds(stack.pid) - cpu_before
    await redis.aclose()
    heartbeats = users * seconds / every
    return {
        "heartbeats per second": heartbeats / elapsed,
        "refused (rate limited)": refused,
        "Redis commands per second (all of Redis)": commands / elapsed,
        "Redis commands per heartbeat": commands / heartbeats,
        "server CPU (% of one core)": cpu / elapsed * 100,
        "  of which idle (% of one core)": idle_rate * 100,
        "server CPU per heartbeat, over idle (us)": (cpu - idle_rate * elapsed) / heartbeats * 1e6,
    }


async def unread(stack: Stack, rooms: int, seconds: float, rounds: int = 2) -> dict[str, float | str]:
    """A user in `rooms` rooms asking for their unread counts, against `me`, 50 clients each:
    after a warm-up of each, in rounds whose order turns (A B C, C B A: what the previous part
    left running, a passing autovacuum, or a machine slowing over the run falls on each alike)."""
    token = stack.tokens[0]
    for _ in range(rooms):
        stack.gql('mutation { createRoom(name: "unread", kind: PUBLIC) { id } }', token=token)
    stack.analyze()
    queries = {"me": ME, "unread": UNREAD, "with ids": UNREAD_WITH_IDS}
    result = await turned_rounds(stack.pid, stack.server.url, token, queries, seconds, rounds)
    me_rps, counts_rps, with_ids_rps = (result.per_second(name) for name in queries)
    return {
        **result.splits_by_round(),
        "`me`: requests per second": me_rps,
        f"`rooms {{ unreadCount }}` over {rooms} rooms: requests per second": counts_rps,
        "  ratio to `me` (target at least 0.33)": counts_rps / me_rps,
        f"`rooms {{ id unreadCount }}` over {rooms} rooms: requests per second": with_ids_rps,
        "  ratio to `me`": with_ids_rps / me_rps,
        "errors": result.errors,
    }


async def main(quick: bool) -> None:
    scale = 5 if quick else 1
    with fresh_stack("chat_bench", {"RATE_LIMIT_TYPING": "1000000/1"}) as stack:
        await stack.fan_out(200 // scale, 1, 20.0, 40 // scale, "messageCreated")  # warm-up
        per_round = EVENTS // scale
        rounds = await alternating(
            PAIRS,
            lambda: stack.fan_out(1000 // scale, 1, 20.0, per_round, "messageCreated"),
            lambda: mixed(stack, 1000 // scale, 20.0, per_round),
        )
        print(f"\nS={1000 // scale}, 20 per second, same run, {PAIRS} pairs of rounds of {per_round} events")
        print(f"  {'':34} {'messageCreated':>15} {'roomEvents mix':>15} {'mix/messages':>13}")
        for number, (messages, events) in enumerate(rounds, start=1):
            print(f"  pair {number} ({'messageCreated first' if number % 2 else 'the mix first'})")
            row("missing", messages.missing, events.missing)
            row("duplicates", messages.duplicates, events.duplicates)
            row("latency p50 (ms)", messages.p50_ms, events.p50_ms)
            row("latency p99 (ms)", messages.p99_ms, events.p99_ms)
            row(CPU, messages.cpu_us_per_delivery, events.cpu_us_per_delivery)
        pooled(
            rounds,
            "mix/messages",
            (("latency p50", "p50_ms"), ("latency p99", "p99_ms"), (CPU, "cpu_us_per_delivery")),
        )
        print("  (the mix: 70% messages, 20% reactions, 10% edits; target within 10% of messageCreated)")
        show("Typing: 100 users in one room, a heartbeat every 3 s each", await typing(stack, 100, 3.0, 30.0 / scale))
        show(
            "Unread counts against `me`, 50 clients, same run, rounds in turned order",
            await unread(stack, 100, 20.0 / scale),
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the load, for a smoke run")
    arguments = parser.parse_args()
    import uvloop

    uvloop.run(main(arguments.quick))
