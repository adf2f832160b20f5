"""Two ways clients come back, measured on the real stack (the Procfile's gunicorn, 2 workers,
Postgres, Redis): one client resuming from the start of a long history while its room is live, and
every client of a dyno reconnecting at once after its workers restart.

    python -m bench.reconnect [--quick]     # also the last part of `make bench`

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.loadgen import Subscriber, open_subscribers, percentile, publish
from bench.run import Stack, fresh_stack
from db.ids import new_id


def seed_history(database_url: str, room: str, sender: str, count: int) -> str:
    """`count` messages in one statement, as if posted one by one (each with its event on the
    room's log, the room's counters kept); the id of the first."""
    r, s = int(room), int(sender)
    ids = ",".join(str(new_id()) for _ in range(count))  # random, as db.messages gives them
    sql = f"""
        INSERT INTO messages (id, room_id, seq, sender_id, body, created_at, event_seq)
        SELECT ids.id, {r}, rooms.last_seq + ids.g, {s}, '0 history ' || ids.g, now(), rooms.last_event_seq + ids.g
        FROM rooms, unnest(ARRAY[{ids}]::bigint[]) WITH ORDINALITY AS ids(id, g) WHERE rooms.id = {r};
        INSERT INTO room_events (room_id, seq, kind, at, user_id, message_id)
        SELECT room_id, event_seq, 'message_created', created_at, sender_id, id FROM messages
        WHERE room_id = {r} AND event_seq > (SELECT last_event_seq FROM rooms WHERE id = {r});
        SELECT id FROM messages WHERE room_id = {r} AND seq = (SELECT last_seq + 1 FROM rooms WHERE id = {r});
        UPDATE rooms SET last_seq = last_seq + {count}, last_event_seq = last_event_seq + {count} WHERE id = {r};
    """
    url = database_url.replace("postgres://", "postgresql://", 1)
    command = ["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-At", "-f", "-"]  # the ids are too long for -c
    return subprocess.run(command, input=sql, check=True, capture_output=True, text=True).stdout.split()[0]


@dataclass
class StallResult:
    live_p50_ms: float
    live_p99_ms: float
    live_max_ms: float
    live_missing: int
    resumed: int = 0
    resume_seconds: float = 0.0
    resume_duplicates: int = 0


async def resume_stall(
    stack: Stack, database_url: str, history: int, live: int, rate: float, seconds: float
) -> tuple[StallResult, StallResult]:
    """A room's live latency with no one resuming, then while one client resumes from the start
    of its `history` messages (each run in a fresh room)."""
    sender = stack.gql("{ me { id } }", token=stack.tokens[0])["me"]["id"]
    results = []
    for resuming in (False, True):
        room = stack.rooms(1)[0]
        first = seed_history(database_url, room, sender, history)
        subscribers = await open_subscribers(stack.server.ws_url, stack.tokens, [room], live)
        await asyncio.sleep(1)
        started = time.monotonic()
        resumer = await Subscriber.open(stack.server.ws_url, stack.tokens[1], room, first) if resuming else None
        acknowledged = await publish(stack.server.url, stack.tokens[0], [room], int(rate * seconds), rate)
        everything = len(acknowledged) + history - 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            any(len(s.seen) < len(acknowledged) for s in subscribers)
            or (resumer is not None and len(resumer.seen) < everything)
        ):
            await asyncio.sleep(0.05)
        latencies = [latency for s in subscribers for latency in s.latencies]
        result = StallResult(
            percentile(latencies, 0.5) * 1000,
            percentile(latencies, 0.99) * 1000,
            max(latencies, default=float("nan")) * 1000,
            sum(len(acknowledged) - len(s.seen) for s in subscribers),
        )
        if resumer is not None:
            result.resumed = len(resumer.seen)
            result.resume_seconds = time.monotonic() - started
            result.resume_duplicates = sum(resumer.seen.values()) - len(resumer.seen)
            resumer.close()
        for subscriber in subscribers:
            subscriber.close()
        results.append(result)
        await asyncio.sleep(1)
    return results[0], results[1]


class Resubscriber(Subscriber):
    """One connection of a `Client`: notes when it is live again and how it was closed."""

    parse_later = False  # `live_at` and `last_id` are noted as each result comes

    def __init__(self) -> None:
        super().__init__()
        self.last_id: str | None = None
        self.subscribed_at = time.time()
        self.live_at: float | None = None
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def on_result(self, message_id: str, sent: float) -> None:
        self.last_id = message_id
        if self.live_at is None and sent > self.subscribed_at:  # caught up: a message sent since
            self.live_at = time.time()

    def on_close(self, code: int | None) -> None:
        if not self.closed.done():
            self.closed.set_result(code)


@dataclass
class Client:
    """One user's session across reconnections, as Apollo's GraphQLWsLink behaves: reconnect
    whenever closed, resubscribe with `after` = the last message it has."""

    token: str
    room: str
    connection: Resubscriber | None = None
    seen: Counter[str] = field(default_factory=Counter)
    closes: Counter[int | None] = field(default_factory=Counter)
    failed_connects: int = 0

    async def stay_connected(self, ws_url: str, gate: asyncio.Semaphore) -> None:
        after = None
        while True:
            async with gate:
                try:
                    connection = await Resubscriber.open(ws_url, self.token, self.room, after)
                except (OSError, RuntimeError, TimeoutError):  # refused, or no handshake while restarting
                    self.failed_connects += 1
                    await asyncio.sleep(0.05)
                    continue
            self.connection = connection
            code = await asyncio.shield(connection.closed)  # cancelling the session must not end it
            self.closes[code] += 1
            self.seen.update(connection.seen)
            connection.abort()
            after = connection.last_id or after

    def distinct(self) -> int:
        """Messages seen so far, counting the open connection's."""
        current = self.connection.seen.keys() if self.connection and not self.connection.closed.done() else ()
        return len(self.seen.keys() | current)

    def finish(self) -> None:
        if self.connection is not None and not self.connection.closed.done():
            self.seen.update(self.connection.seen)
            self.connection.close()


@dataclass
class StormResult:
    clients: int
    seconds_until_all_live: float
    live: int
    closes: Counter[int | None]
    failed_connects: int
    unhandled: int
    expected: int
    received: int
    missing: int
    duplicates: int


async def storm(stack: Stack, clients: int, rooms: int, rate: float, concurrency: int) -> StormResult:
    """`clients` subscribers over `rooms` rooms, every account; then the workers restart (SIGHUP to
    gunicorn: what a deploy or a recycle does to every connection) and every client reconnects at
    once, `concurrency` at a time with no pause, resuming from its last message, while a publisher
    keeps posting throughout."""
    room_ids = stack.rooms(rooms)
    everyone = [Client(stack.tokens[i % len(stack.tokens)], room_ids[i % rooms]) for i in range(clients)]
    gate = asyncio.Semaphore(concurrency)
    sessions = [asyncio.create_task(client.stay_connected(stack.server.ws_url, gate)) for client in everyone]
    # Live before anything is posted: a first message reaches every client.
    while sum(1 for c in everyone if c.connection is not None) < clients:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    per_room: Counter[str] = Counter()
    for room in room_ids:
        stack.gql(
            "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { id } }",
            {"r": room, "b": f"{time.time():.6f} first"},
            stack.tokens[0],
        )
        per_room[room] += 1
    while any(c.connection is None or not c.connection.seen for c in everyone):
        await asyncio.sleep(0.1)

    stop = asyncio.Event()

    async def keep_posting() -> None:
        chunk = rooms * max(1, int(rate // rooms))
        while not stop.is_set():
            for index in await publish(stack.server.url, stack.tokens[0], room_ids, chunk, rate):
                per_room[room_ids[index % rooms]] += 1

    posting = asyncio.create_task(keep_posting())
    await asyncio.sleep(2)
    before = {id(c): c.connection for c in everyone}
    log_from = len(stack.server.log())
    assert stack.server.process is not None
    restarted = time.time()
    os.kill(stack.server.process.pid, signal.SIGHUP)

    def live_again(client: Client) -> float | None:
        connection = client.connection
        if connection is None or connection is before[id(client)] or connection.subscribed_at < restarted:
            return None
        return connection.live_at

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(live_again(c) is None for c in everyone):
        await asyncio.sleep(0.1)
    live_at = [at for at in map(live_again, everyone) if at is not None]
    await asyncio.sleep(2)
    stop.set()
    await posting
    expected = sum(per_room[c.room] for c in everyone)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(map(Client.distinct, everyone)) < expected:
        await asyncio.sleep(0.2)
    for session in sessions:
        session.cancel()
    await asyncio.gather(*sessions, return_exceptions=True)
    for client in everyone:
        client.finish()
    log = stack.server.log()[log_from:]
    closes: Counter[int | None] = Counter()
    for client in everyone:
        closes.update(client.closes)
    received = sum(sum(c.seen.values()) for c in everyone)
    distinct = sum(len(c.seen) for c in everyone)
    return StormResult(
        clients=clients,
        seconds_until_all_live=(max(live_at) - restarted) if live_at else float("nan"),
        live=len(live_at),
        closes=closes,
        failed_connects=sum(c.failed_connects for c in everyone),
        unhandled=log.count("Exception in ASGI application"),
        expected=expected,
        received=received,
        missing=expected - distinct,
        duplicates=received - distinct,
    )


def report(idle: StallResult, resuming: StallResult, history: int, live: int, storm_result: StormResult) -> None:
    print(f"\nResume: {live} live subscribers in a room, one client resuming from the start of {history:,} messages")
    print(f"  {'':34} {'resuming':>12} {'no one':>12}")
    for label, value in (
        ("live latency p50 (ms)", lambda r: r.live_p50_ms),
        ("live latency p99 (ms)", lambda r: r.live_p99_ms),
        ("live latency max (ms)", lambda r: r.live_max_ms),
        ("live deliveries missing", lambda r: r.live_missing),
    ):
        print(f"  {label:34} {value(resuming):12.1f} {value(idle):12.1f}")
    print(
        f"  the resumer got {resuming.resumed:,} of {history - 1:,}+ messages in {resuming.resume_seconds:.1f} s, "
        f"{resuming.resume_duplicates} twice"
    )
    s = storm_result
    print(f"\nReconnect storm: {s.clients:,} clients, workers restarted (SIGHUP), all reconnecting at once")
    print(f"  every client live again after         {s.seconds_until_all_live:.1f} s ({s.live:,} of {s.clients:,})")
    print(f"  close codes received                  {dict(s.closes)}")
    print(f"  connect attempts refused or cut       {s.failed_connects:,}")
    print(f"  unhandled exceptions in the server    {s.unhandled}")
    print(f"  deliveries expected / received        {s.expected:,} / {s.received:,}")
    print(f"  missing / duplicate                   {s.missing} / {s.duplicates}")


async def run(stack: Stack, database_url: str, quick: bool) -> None:
    scale = 5 if quick else 1
    history, live = 20_000 // scale, 20
    idle, resuming = await resume_stall(stack, database_url, history, live, 20.0, 10.0 / scale)
    storm_result = await storm(stack, 5000 // scale, 10, 10.0, 100)
    report(idle, resuming, history, live, storm_result)


async def main(quick: bool) -> None:
    with fresh_stack("chat_bench") as stack:
        await run(stack, stack.database_url, quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the load, for a smoke run")
    arguments = parser.parse_args()
    import uvloop

    uvloop.run(main(arguments.quick))
