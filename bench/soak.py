"""The soak: the real stack (the Procfile's web command, 2 workers, Postgres, Redis) under churn,
WebSocket subscribers that come and go, keep-alive HTTP with malformed requests mixed in, and
oversized bodies, all at once; then each worker's memory before (after a warm-up round), at
peak and after. Memory that grows with the traffic, not with what is open, shows up here.
Prints figures, asserts nothing.

    make soak            # or: python -m bench.soak [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import orjson

from bench.loadgen import CREATE_MESSAGE, ME, Subscriber, children, keep_alive, post_request, rss
from bench.run import Stack, fresh_stack

MAX_BODY_BYTES = 65_536  # the soak's own limit: 10,000 bodies over 1 MB would be a loopback benchmark
ROOMS = 4
WS_AT_ONCE = 64
HTTP_CLIENTS = 16
OVERSIZED_CLIENTS = 4
SETTLE_SECONDS = 2.0
SAMPLE_SECONDS = 0.25
RECENT = 8  # `after` replays from the oldest of a room's last few messages: a little history

ROOMS_QUERY = "{ rooms { id name } }"
HISTORY = (
    "query($r: ID!) { room(id: $r) { messages(first: 10) { edges { node { id body seq } } pageInfo { endCursor } } } }"
)
MEMBERS = "query($r: ID!) { room(id: $r) { members { id name } } }"
AVATAR = "query($s: Int) { me { id avatar(size: $s) } }"
SYNTAX_ERRORS = [
    "{ me { id ",
    "query { rooms { id }",
    "mutation {",
    "{ me { id name } } }",
    "{ room(id: ) { id } }",
    "subscription",
    '{ me { id "name" } }',
    "query($x: ) { me { id } }",
]
UNKNOWN_FIELDS = ["{ me { id email } }", "{ nobody { id } }", "{ rooms { id topic } }", "mutation { deleteEverything }"]
WRONG_SHAPES = [b'{"query": 42}', b"[]", b'{"variables": {}}', b'{"query": "{ me { id } }", "variables": "x"}', b"null"]
ENDINGS = ("abrupt", "complete, then close", "close")
TIMESTAMP = re.compile(r"^\[[^]]*\] \[\d+\] |^\d{4}-\d\d-\d\d [\d:,]+ ")
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


@dataclass(frozen=True)
class Load:
    cycles: int
    requests: int
    oversized: int

    def part(self, fraction: float) -> Load:
        return Load(*(max(1, round(n * fraction)) for n in (self.cycles, self.requests, self.oversized)))


FULL = Load(cycles=20_000, requests=100_000, oversized=10_000)


@dataclass
class Tally:
    cycles: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    with_after: int = 0
    replayed: int = 0
    error_frames: int = 0
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    graphql_errors: int = 0
    posted: int = 0
    stopped_early: bool = False


class ChurnSubscriber(Subscriber):
    """A subscriber that also knows when its subscription is in place: the server handles a
    connection's messages in order, so the pong to a ping sent after `subscribe` means the
    subscription has started (or been refused, with an `error` frame first)."""

    parse_later = False  # `delivered` is set as the first result comes

    def __init__(self) -> None:
        super().__init__()
        loop = asyncio.get_running_loop()
        self.ponged = loop.create_future()
        self.delivered = loop.create_future()
        self.refused = False
        self.frames: list[str] = []  # the kinds received, in order: what a failed cycle got

    def on_message(self, payload: bytes, received: float) -> None:
        kind = orjson.loads(payload)["type"]
        if kind not in self.frames:
            self.frames.append(kind)
        if kind == "pong":
            if not self.ponged.done():
                self.ponged.set_result(None)
            return
        super().on_message(payload, received)
        if kind == "next" and not self.delivered.done():
            self.delivered.set_result(None)
        elif kind == "error":
            self.refused = True

    def connection_lost(self, exc: Exception | None) -> None:
        lost = ConnectionResetError("connection closed")
        for future in (self.handshake_done, self.acked, self.ponged, self.delivered):
            if not future.done():
                future.set_exception(lost)
                future.exception()  # raised in whoever awaits it; nobody else needs it logged


def malformed_body(j: int) -> bytes:
    """Bad requests of every kind, some never seen before (the caches must not keep them all),
    some seen over and over."""
    match j % 6:
        case 0:
            return orjson.dumps({"query": f"{{ me {{ id name avatar(size: {j}) }}"})
        case 1:
            return orjson.dumps({"query": SYNTAX_ERRORS[j % len(SYNTAX_ERRORS)]})
        case 2:
            return b'{"query": "{ me { id } }", "variables": {"n": ' + str(j).encode()
        case 3:
            return orjson.dumps({"query": f"{{ me {{ id nickname{j % 2000} }} }}"})
        case 4:
            return orjson.dumps({"query": UNKNOWN_FIELDS[j % len(UNKNOWN_FIELDS)]})
        case _:
            return WRONG_SHAPES[j % len(WRONG_SHAPES)]


class Soak:
    def __init__(self, stack: Stack) -> None:
        url = httpx.URL(stack.server.url)
        self.host, self.port = url.host, url.port or 80
        self.ws_url = stack.server.ws_url
        self.tokens = stack.tokens
        self.rooms = stack.rooms(ROOMS)
        self.recent: dict[str, deque[str]] = {room: deque(maxlen=RECENT) for room in self.rooms}
        for room in self.rooms:
            for i in range(RECENT):
                variables = {"room": room, "body": f"{time.time():.6f} history {i}"}
                self.recent[room].append(stack.gql(CREATE_MESSAGE, variables, self.tokens[0])["createMessage"]["id"])
        padding = b"x" * (MAX_BODY_BYTES + 4096)
        body = b'{"query": "{ me { id } }", "padding": "' + padding + b'"}'
        self.oversized_bytes = len(body)
        self.too_large = {
            chunked: post_request(self.host, self.port, body, chunked=chunked) for chunked in (False, True)
        }
        self.tally = Tally()
        self.next_cycle = self.next_request = 0

    async def cycle(self, i: int) -> None:
        """connect, connection_init, subscribe (3 in 10 replaying history), confirm, disconnect."""
        room = self.rooms[i % len(self.rooms)]
        after = self.recent[room][0] if i % 10 < 3 else None
        sub: ChurnSubscriber | None = None
        step = "opening"
        try:
            sub = await ChurnSubscriber.open(self.ws_url, self.tokens[i % len(self.tokens)], room, after)
            step = "subscribing"
            sub.send_text({"type": "ping"})
            await asyncio.wait_for(sub.ponged, 10)
            if after is not None and not sub.refused:
                step = "waiting for the replay"
                await asyncio.wait_for(sub.delivered, 10)
        except asyncio.CancelledError:
            if sub is not None:
                sub.abort()
            raise
        except (OSError, TimeoutError, RuntimeError) as error:
            if sub is not None:
                sub.abort()
            seen = ", ".join(sub.frames) if sub is not None else "none"
            self.tally.cycles[f"failed {step} ({type(error).__name__}; frames received: {seen})"] += 1
            return
        ending = ENDINGS[i % len(ENDINGS)]
        if ending == "abrupt":
            sub.abort()
        else:
            if ending.startswith("complete"):
                sub.send_text({"id": "1", "type": "complete"})
            sub.close()
        if sub.refused:
            self.tally.cycles["refused (error frame)"] += 1
            return
        self.tally.cycles["completed"] += 1
        self.tally.endings[ending] += 1
        self.tally.with_after += after is not None
        self.tally.replayed += len(sub.seen)
        self.tally.error_frames += sub.errors

    async def churn(self, indexes: Iterator[int]) -> None:
        for i in indexes:
            await self.cycle(i)

    def requests(self, start: int, count: int) -> Iterator[tuple[tuple[str, str], bytes]]:
        """Nine in ten ordinary (one of those nine a new message), one in ten malformed."""
        for i in range(start, start + count):
            token, room = self.tokens[i % len(self.tokens)], self.rooms[i // 10 % len(self.rooms)]
            kind, body = "query", b""
            match i % 10:
                case 0 | 1 | 2 | 3:
                    body = orjson.dumps({"query": ME})
                case 4:
                    body = orjson.dumps({"query": ROOMS_QUERY})
                case 5:
                    body = orjson.dumps({"query": HISTORY, "variables": {"r": room}})
                case 6:
                    kind = "mutation"
                    variables = {"room": room, "body": f"{time.time():.6f} soak {i}"}
                    body = orjson.dumps({"query": CREATE_MESSAGE, "variables": variables})
                case 7:
                    body = orjson.dumps({"query": MEMBERS, "variables": {"r": room}})
                case 8:
                    body = orjson.dumps({"query": AVATAR, "variables": {"s": i % 100}})
                case _:
                    kind, body = "malformed", malformed_body(i // 10)
            yield (kind, room), post_request(self.host, self.port, body, token)

    def oversized(self, count: int) -> Iterator[tuple[tuple[str, str], bytes]]:
        """Four in five declare their length (refused before any byte of the body is read), one
        in five is chunked (counted as it arrives)."""
        for i in range(count):
            chunked = i % 5 == 4
            yield ("oversized", "chunked" if chunked else "declared"), self.too_large[chunked]

    def answered(self, label: tuple[str, str], head: bytes, payload: bytes, _seconds: float) -> None:
        kind, room = label
        status = int(head[9:12])
        self.tally.answers[kind, status] += 1
        if kind in ("query", "mutation") and b'"errors"' in payload:
            self.tally.graphql_errors += 1
        if kind == "mutation" and status == 200:
            created = (orjson.loads(payload).get("data") or {}).get("createMessage")
            if created:
                self.tally.posted += 1
                self.recent[room].append(created["id"])

    def failed(self, label: tuple[str, str], error: Exception) -> None:
        self.tally.failures[label[0], type(error).__name__] += 1

    async def round(self, load: Load, deadline: float) -> None:
        """All three kinds of traffic at once, stopped at `deadline` whatever is left."""
        cycles = iter(range(self.next_cycle, self.next_cycle + load.cycles))
        requests = self.requests(self.next_request, load.requests)
        oversized = self.oversized(load.oversized)
        self.next_cycle += load.cycles
        self.next_request += load.requests
        clients = [self.churn(cycles) for _ in range(WS_AT_ONCE)]
        clients += [keep_alive(self.host, self.port, requests, self.answered, self.failed) for _ in range(HTTP_CLIENTS)]
        clients += [
            keep_alive(self.host, self.port, oversized, self.answered, self.failed) for _ in range(OVERSIZED_CLIENTS)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*clients), max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            self.tally.stopped_early = True


def worker_rss(master: int) -> dict[int, int]:
    return {pid: rss(pid) for pid in children(master)}


async def watch_peaks(master: int, peaks: dict[int, int]) -> None:
    while True:
        for pid, size in worker_rss(master).items():
            peaks[pid] = max(peaks.get(pid, 0), size)
        await asyncio.sleep(SAMPLE_SECONDS)


async def settled(master: int) -> dict[int, int]:
    await asyncio.sleep(SETTLE_SECONDS)
    return worker_rss(master)


def report(load: Load, soak: Soak, seconds: float, memory: dict[str, dict[int, int]]) -> None:
    mib, tally = 2**20, soak.tally
    print(
        f"\nSoak: {load.cycles:,} WebSocket subscribe/disconnect cycles ({WS_AT_ONCE} at once), "
        f"{load.requests:,} HTTP requests on {HTTP_CLIENTS} keep-alive connections (1 in 10 malformed), "
        f"{load.oversized:,} oversized bodies ({OVERSIZED_CLIENTS} clients; MAX_BODY_BYTES={MAX_BODY_BYTES} for the "
        f"soak, bodies of {soak.oversized_bytes:,} bytes), all at once, in two halves, in {seconds:.0f} s"
    )
    if tally.stopped_early:
        print("  STOPPED AT THE TIME LIMIT: the counts below are what was done by then")
    print("\nWorker RSS (MiB): before = after a warm-up round and 2 s; middle and after = 2 s after each half;")
    print("peak = highest of samples every 0.25 s during both halves. The first half fills the bounded caches")
    print("(documents, validation verdicts, compiled statements) and the collector's young generations: the")
    print("growth after that warm-up, the 2nd half's, is what would go on with the traffic")
    print(f"  {'worker pid':>10} {'before':>8} {'middle':>8} {'peak':>8} {'after':>8} {'growth':>8} {'2nd half':>9}")
    for pid, before in memory["before"].items():
        middle, after, peak = memory["middle"].get(pid, 0), memory["after"].get(pid, 0), memory["peak"].get(pid, 0)
        growth = (after - before) / before * 100 if before and after else float("nan")
        second = (after - middle) / middle * 100 if middle and after else float("nan")
        print(
            f"  {pid:>10} {before / mib:8.1f} {middle / mib:8.1f} {peak / mib:8.1f} {after / mib:8.1f} "
            f"{growth:+7.1f}% {second:+8.1f}%"
        )
    replaced = set(memory["after"]) ^ set(memory["before"])
    if replaced:
        print(f"  workers replaced during the run (pids that came or went): {sorted(replaced)}")

    print("\nWebSocket cycles (connect, connection_init, subscribe to messageCreated, confirmed, disconnect)")
    for outcome, count in sorted(tally.cycles.items()):
        print(f"  {outcome:34} {count:>8,}")
    for ending, count in sorted(tally.endings.items()):
        print(f"  ended: {ending:27} {count:>8,}")
    print(f"  {'with after (replaying history)':34} {tally.with_after:>8,}")
    print(f"  {'messages received (replay + live)':34} {tally.replayed:>8,}")
    print(f"  {'next frames with errors':34} {tally.error_frames:>8,}")

    print("\nHTTP answers by status")
    for (kind, status), count in sorted(tally.answers.items()):
        print(f"  {kind:10} {status:>3}  {count:>9,}")
    print(f"  ordinary answers carrying GraphQL errors  {tally.graphql_errors:,}")
    print(f"  messages posted                           {tally.posted:,}")
    if tally.failures:
        print("  requests without an answer (the connection failed first), by kind and error:")
        for (kind, error), count in sorted(tally.failures.items()):
            print(f"    {kind:10} {error:24} {count:>8,}")
    else:
        print("  requests without an answer               0")


def print_log_errors(log: str) -> None:
    """The server's own account: ERROR lines and the exceptions of its tracebacks, by message."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        if "Enable tracemalloc" in line:  # Python's hint after a warning, not a message of its own
            continue
        if " ERROR " in line or "[ERROR]" in line or "Warning: " in line:
            found[TIMESTAMP.sub("", line)[:140]] += 1
        elif EXCEPTION.match(line):
            found[line[:140]] += 1
    print(f"\nServer log, warm-up and shutdown included: {sum(found.values()):,} error lines and exceptions")
    for message, count in found.most_common(12):
        print(f"  {count:>6,}  {message}")


async def main(quick: bool, max_seconds: float) -> None:
    load = FULL.part(0.1) if quick else FULL
    warm_up, half = load.part(0.01), load.part(0.5)
    with fresh_stack("chat_soak", {"MAX_BODY_BYTES": str(MAX_BODY_BYTES)}) as stack:
        soak = Soak(stack)
        started = time.monotonic()
        deadline = started + max_seconds
        print("warm-up round ...", file=sys.stderr)
        await soak.round(warm_up, deadline)
        memory = {"before": await settled(stack.pid), "peak": {}}
        soak.tally = Tally()  # the counts are the measured run's
        sampler = asyncio.create_task(watch_peaks(stack.pid, memory["peak"]))
        print("first half ...", file=sys.stderr)
        measured = time.monotonic()
        await soak.round(half, deadline)
        memory["middle"] = await settled(stack.pid)
        print("second half ...", file=sys.stderr)
        await soak.round(half, deadline)
        seconds = time.monotonic() - measured - SETTLE_SECONDS
        sampler.cancel()
        memory["after"] = await settled(stack.pid)
    report(Load(half.cycles * 2, half.requests * 2, half.oversized * 2), soak, seconds, memory)
    print_log_errors(stack.server.log())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the load, for a smoke run")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop the traffic after this long")
    arguments = parser.parse_args()
    import uvloop

    uvloop.run(main(arguments.quick, arguments.max_seconds))
