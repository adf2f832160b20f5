"""What an abusive member or an anonymous client costs everyone else, on the real stack (the
Procfile's gunicorn, 2 workers, Postgres, a Redis of its own), each figure beside its baseline
in the same run:

- Live delivery: 200 honest subscribers (50 users, 4 each) in one room (half `messageCreated`,
  half `roomEvents` with the web client's selection), a poster at a steady rate. Without an
  attacker, then with a member of the room holding 100 distinct heavy subscriptions (the
  heaviest selection the server accepts, found by a ladder of sizes at start) spread over
  WebSockets of 20, and reacting at the action rate limit (6 a second: RATE_LIMIT_ACTIONS'
  default 60/10), then without again. The honest subscribers' p50 and p99 delivery latency,
  what went missing, and what the server answered the attacker (subscriptions and reactions
  accepted and refused, by code).
- Caches: each worker's RSS and Redis' `used_memory` before and after 2,000 distinct valid
  documents padded to just under 32 KB (`{__typename}` and a `#...` comment), sent plainly and
  as Apollo persisted-query registrations (anonymous and signed in), beside 2,000 of one small
  query; with what the server answered, by status and code. One fresh server and Redis each.

The attacker meets every limit at its default: the servers here start from the process's
environment and this bench's settings only, not the tests' BASE_ENV (which raises limits for
tests that all sign up from one address). What the bench itself needs is raised: sign-ups
(RATE_LIMIT_AUTH: 52 users, 50 honest ones, the attacker and a scout that finds the heaviest
selection), the poster's messages (RATE_LIMIT_MESSAGES: 5 a second is above the default 3; the
attacker posts none), and no worker recycling (MAX_REQUESTS=0: a recycled worker would hide
what its caches hold, and would disconnect everyone mid-round).

    make bench-abuse        # or: python -m bench.abuse [--quick] [--query-bytes N]

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Self

import httpx
import orjson

from bench.loadgen import (
    Subscriber,
    children,
    collector_paused,
    keep_alive,
    percentile,
    post_request,
    publish,
    rss,
    tree_cpu_seconds,
    until_read,
)
from tests.support.processes import (
    LOG_DIR,
    ROOT,
    PrivateRedis,
    Server,
    create_database,
    drop_database,
    migrate,
    unique_name,
)

SIGN_UP = 'mutation($e: String!) { signUp(name: "abuse", email: $e, password: "benchmark!") { token } }'
CREATE_ROOM = 'mutation { createRoom(name: "abuse", kind: PUBLIC) { id } }'
JOIN = "mutation($r: ID!) { joinRoom(room: $r) { id } }"
CREATE_MESSAGE = "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }"
REACT = "mutation($m: ID!, $e: String!) { react(message: $m, emoji: $e) { id } }"
UNREACT = "mutation($m: ID!, $e: String!) { unreact(message: $m, emoji: $e) { id } }"
HONEST_FIELDS = ("messageCreated", "roomEventsMix")  # bench.loadgen.SUBSCRIPTIONS: what the web client selects
ATTACK_FIELDS = ("messageCreated", "roomEvents")
HONEST = 200  # subscribers, over USERS accounts
USERS = 50  # 4 subscribers each, well under MAX_CONNECTIONS_PER_USER (each sign-up costs an argon2id hash)
ATTACK_SUBSCRIPTIONS = 100
PER_SOCKET = 20  # WS_MAX_SUBSCRIPTIONS' default, and MAX_CONNECTIONS_PER_USER's 20 sockets hold 400
REACTIONS_PER_SECOND = 6.0  # RATE_LIMIT_ACTIONS' default, 60 per 10 s
POSTER_RATE = 5.0
OPERATION_ID = re.compile(rb'"id":"([^"]*)"')


class DefaultsServer(Server):
    """The Procfile's gunicorn with the process's environment and `env` only. `Server.start`
    lays the tests' BASE_ENV under `env`, and the tests raise limits there (every test signs up
    from 127.0.0.1; each part of issue 24 may raise its own): the attacker here must meet the
    defaults, whatever the tests need."""

    def start(self, timeout: float = 60.0) -> Self:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"server-{self.port}.log"
        env = {**os.environ, "PORT": str(self.port), "WEB_CONCURRENCY": str(self.workers), **self.env}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["gunicorn", "-c", "serving/gunicorn.conf.py", self.app],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self


@asynccontextmanager
async def stack(database_url: str) -> AsyncIterator[tuple[DefaultsServer, PrivateRedis]]:
    """A fresh Redis of its own (its `used_memory` is ours alone) and a server on it."""
    redis = PrivateRedis().start()
    server: DefaultsServer | None = None
    try:
        settings = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "CHANNEL_PREFIX": f"abuse-{uuid.uuid4().hex[:8]}:",
            "RATE_LIMIT_AUTH": "1000000/1",
            "RATE_LIMIT_MESSAGES": "1000000/1",
            "MAX_REQUESTS": "0",
            "LOG_LEVEL": "warning",
        }
        server = DefaultsServer(env=settings, workers=2)
        await asyncio.to_thread(server.start)
        yield server, redis
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        redis.stop()


def error_code(body: dict) -> str:
    """`ok`, or the first error's `extensions.code` (its message when it has none)."""
    errors = body.get("errors")
    if not errors:
        return "ok"
    first = errors[0] if isinstance(errors, list) and errors else {}
    return str((first.get("extensions") or {}).get("code") or first.get("message", "?"))[:60]


class Api:
    """Plain GraphQL over HTTP for the setup and the mutations."""

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=120)

    async def call(self, query: str, variables: dict | None = None, token: str | None = None) -> tuple[str, dict]:
        """(`ok` or the refusal's code, the data)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = {"query": query, "variables": variables or {}}
        response = await self.http.post("/graphql", json=payload, headers=headers)
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}", {}
        return error_code(body), body.get("data") or {}

    async def gql(self, query: str, variables: dict | None = None, token: str | None = None) -> dict:
        code, data = await self.call(query, variables, token)
        assert code == "ok", (code, query)
        return data

    async def sign_up(self, count: int) -> list[str]:
        gate = asyncio.Semaphore(4)  # each sign-up hashes with argon2id (64 MiB)

        async def one(i: int) -> str:
            async with gate:
                email = f"abuse{i}-{uuid.uuid4().hex[:8]}@example.com"
                return (await self.gql(SIGN_UP, {"e": email}))["signUp"]["token"]

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    async def close(self) -> None:
        await self.http.aclose()


STARTED = time.monotonic()


def progress(what: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {what}", file=sys.stderr, flush=True)


# -- live delivery -----------------------------------------------------------------------------


class HonestSubscriber(Subscriber):
    """`messageCreated` or `roomEvents` (the web client's selection): messages timed from the
    send time leading their body; other events (the attacker's reactions) counted apart."""

    def __init__(self) -> None:
        super().__init__()
        self.other_events = 0
        self.closed_with: str | None = None  # how the server ended the connection, if it did

    def on_close(self, code: int | None) -> None:
        if self.closed_with is None:
            self.closed_with = "no close frame" if code is None else str(code)

    def on_message(self, payload: bytes, received: float) -> None:
        frame = orjson.loads(payload)
        if frame["type"] in ("error", "complete"):
            self.errors += 1
            return
        if frame["type"] != "next":
            super().on_message(payload, received)  # the protocol's own frames
            return
        result = frame["payload"]
        data = result.get("data") or {}
        message = data.get("messageCreated")
        if message is None and (event := data.get("roomEvents")):
            if "emoji" in event or "editedAt" in (event.get("message") or {}):
                self.other_events += 1
                return
            message = event.get("message")
        if not message or result.get("errors"):
            self.errors += 1
            return
        self._seen[message["id"]] = self._seen.get(message["id"], 0) + 1
        self._latencies.append(received - float(message["body"].split(" ", 1)[0]))


class Flood(Subscriber):
    """One of the attacker's WebSockets: many subscriptions, every result counted by operation
    id and by bytes without being parsed (a result may be hundreds of kilobytes, and the
    generator shares the server's two cores); refusals parsed for their code."""

    parse_later = False

    def __init__(self) -> None:
        super().__init__()
        self.results: Counter[str] = Counter()
        self.failed_results: dict[str, str] = {}  # operation id: a result's first error code
        self.refused: dict[str, str] = {}  # operation id: the refusal's code
        self.bytes = 0
        self.close_code: int | None = None
        self.closed = False

    def subscribe(self, operation_id: str, query: str, room: str) -> None:
        payload = {"query": query, "variables": {"room": room}}
        self.send_text({"id": operation_id, "type": "subscribe", "payload": payload})

    def on_message(self, payload: bytes, received: float) -> None:
        self.bytes += len(payload)
        if b'"type":"next"' in payload[:48]:
            found = OPERATION_ID.search(payload, 0, 200)
            operation = found.group(1).decode() if found else "?"
            self.results[operation] += 1
            if b'"errors":' in payload and operation not in self.failed_results:
                self.failed_results[operation] = error_code(orjson.loads(payload)["payload"])
            return
        frame = orjson.loads(payload)
        if frame["type"] == "error":
            errors = frame.get("payload")
            self.refused[frame.get("id", "?")] = error_code({"errors": errors if isinstance(errors, list) else [{}]})
        elif frame["type"] == "complete":
            self.refused.setdefault(frame.get("id", "?"), "completed at once")
        else:
            super().on_message(payload, received)

    def on_close(self, code: int | None) -> None:
        if not self.closed:
            self.closed, self.close_code = True, code

    def verdict(self, operation_id: str) -> str | None:
        """What became of a subscription: refused (its code), results (with errors or not), or
        nothing yet (None)."""
        if operation_id in self.refused:
            return f"refused: {self.refused[operation_id]}"
        if operation_id in self.failed_results:
            return f"results with errors: {self.failed_results[operation_id]}"
        if self.results[operation_id]:
            return "accepted"
        if self.closed:
            return f"connection closed ({self.close_code})"
        return None


def heavy(field: str, levels: int, first: int, alias: str = "") -> str:
    """A subscription that reads `first` messages of the room, with their reactions and sender,
    for every event; each level more reads `first` messages again from each of those (the last
    level only their bodies). Two levels are depth 10 (QUERY_MAX_DEPTH's default today), three
    are 14."""
    inner = "body"
    for _ in range(levels - 1):
        inner = f"room {{ messages(first: {first}) {{ edges {{ node {{ {inner} }} }} }} }}"
    node = "reactions { emoji count } sender { name }" + (f" {inner}" if levels > 1 else "")
    selection = f"room {{ messages(first: {first}) {{ edges {{ node {{ {node} }} }} }} }}"
    return f"subscription($room: ID!) {{ {alias}{field}(room: $room) {{ {selection} }} }}"


def weight(shape: tuple[int, int]) -> int:
    """The messages one execution completes: n + n^2 + ... for `levels` levels of `first: n`."""
    levels, first = shape
    return sum(first**level for level in range(1, levels + 1))


# Heaviest first.
LADDER = sorted(
    [(3, n) for n in (10, 7, 5, 4, 3)]
    + [(2, n) for n in (100, 50, 30, 20, 14, 10, 7, 5, 3, 2)]
    + [(1, n) for n in (100, 70, 50, 35, 25, 15, 10, 5, 2, 1)],
    key=lambda shape: -weight(shape),
)


def shape_name(shape: tuple[int, int]) -> str:
    levels, first = shape
    nesting = {1: "", 2: " nested twice", 3: " nested three times"}[levels]
    return f"messages(first: {first}){nesting} ({weight(shape):,} messages an event)"


async def probe(
    server: Server, api: Api, scout: str, poster: str, room: str, field: str
) -> tuple[tuple[int, int] | None, dict[tuple[int, int], str]]:
    """The ladder, on WebSockets of a scout's own (the attacker's caps stay untouched), 20 sizes
    to a socket: every size subscribed at once, then a message posted until each is refused or
    has a result (three tries, 5 s each). The heaviest with a result without errors, and every
    size's verdict."""
    floods = [await Flood.connect(server.ws_url, scout) for _ in range(0, len(LADDER), PER_SOCKET)]

    def verdict(number: int) -> str | None:
        return floods[number // PER_SOCKET].verdict(f"p{number}")

    try:
        for number, shape in enumerate(LADDER):
            floods[number // PER_SOCKET].subscribe(f"p{number}", heavy(field, *shape), room)
        for _ in range(3):
            await api.gql(CREATE_MESSAGE, {"room": room, "body": f"{time.time():.6f} probe"}, poster)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(verdict(n) is None for n in range(len(LADDER))):
                await asyncio.sleep(0.05)
            if all(verdict(n) is not None for n in range(len(LADDER))):
                break
        verdicts = {shape: verdict(n) or "silent" for n, shape in enumerate(LADDER)}
    finally:
        for flood in floods:
            flood.close()
    chosen = next((shape for shape, verdict in verdicts.items() if verdict == "accepted"), None)
    return chosen, verdicts


@dataclass
class Round:
    label: str
    messages: int = 0
    failed_posts: int = 0
    expected: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    error_frames: int = 0
    other_events: int = 0
    closed: Counter[str] = field(default_factory=Counter)  # honest sockets the server ended, by close code
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    cpu_percent: float = 0.0
    postgres_percent: float = 0.0
    generator_percent: float = 0.0
    by_field: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # p50, p99 (ms), missing
    subscriptions: Counter[str] = field(default_factory=Counter)
    reactions: Counter[str] = field(default_factory=Counter)
    attacker_results: int = 0
    attacker_mib: float = 0.0


async def open_honest(server: Server, tokens: list[str], room: str) -> list[Subscriber]:
    """HONEST subscribers over `tokens` in turn, each field in turn (a user with two subscribers
    has one of each)."""
    subscribers: list[Subscriber] = []
    for start in range(0, HONEST, 100):
        subscribers += await asyncio.gather(
            *(
                HonestSubscriber.open(server.ws_url, tokens[i % len(tokens)], room, None, HONEST_FIELDS[i % 2])
                for i in range(start, min(HONEST, start + 100))
            )
        )
    return subscribers


async def open_attack(
    server: Server, token: str, room: str, shapes: dict[str, tuple[int, int]]
) -> tuple[list[Flood], list[tuple[Flood, str]]]:
    """100 distinct heavy subscriptions, 20 to a WebSocket, each field in turn (a distinct alias
    makes each selection its own: the server must execute each apart)."""
    fields = [name for name in ATTACK_FIELDS if name in shapes]
    floods: list[Flood] = []
    operations: list[tuple[Flood, str]] = []
    for number in range(ATTACK_SUBSCRIPTIONS):
        if number % PER_SOCKET == 0:
            floods.append(await Flood.connect(server.ws_url, token))
        name = fields[number % len(fields)]
        operation = f"a{number}"
        floods[-1].subscribe(operation, heavy(name, *shapes[name], alias=f"h{number}: "), room)
        operations.append((floods[-1], operation))
    return floods, operations


async def react_at_rate(api: Api, token: str, message: str, rate: float, seconds: float) -> Counter[str]:
    """React and take it back in turn on one message, `rate` actions a second on schedule (16 at
    most in flight): what the server answered, by code."""
    answers: Counter[str] = Counter()
    gate = asyncio.Semaphore(16)

    async def one(number: int) -> None:
        emoji = f":x{number // 2 % 10}:"
        async with gate:
            code, _ = await api.call(REACT if number % 2 == 0 else UNREACT, {"m": message, "e": emoji}, token)
        answers[code] += 1

    tasks = []
    start = time.monotonic()
    for number in itertools.count():
        at = start + number / rate
        if at >= start + seconds:
            break
        if (delay := at - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(number)))
    await asyncio.gather(*tasks)
    return answers


def postgres_cpu_seconds(database: str) -> float:
    """utime + stime of the Postgres backends connected to `database` (their process titles
    name it), in seconds: what the server's SQL costs, apart from the other databases on the
    shared Postgres."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if database.encode() not in cmdline.read():
                    continue
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


async def until_quiet(pid: int, seconds: float = 60.0) -> None:
    """Until the server spends under a fifth of a core over half a second (the backlog an
    attacker left drained), or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if tree_cpu_seconds(pid) - before < 0.1:
            return


async def live_round(
    label: str,
    server: Server,
    api: Api,
    honest: list[str],
    room: str,
    target: str,
    seconds: float,
    attacker: tuple[str, dict[str, tuple[int, int]]] | None,
) -> Round:
    progress(f"live delivery: {label}")
    result = Round(label)
    assert server.process is not None
    subs = await open_honest(server, honest, room)
    floods: list[Flood] = []
    operations: list[tuple[Flood, str]] = []
    if attacker is not None:
        floods, operations = await open_attack(server, attacker[0], room, attacker[1])
    # Refusals come at once; an accepted subscription says nothing until an event: a bounded
    # wait for the refusals, no barrier to poll for.
    await asyncio.sleep(2)
    database = database_name(server)
    cpu_before, started = tree_cpu_seconds(server.process.pid), time.monotonic()
    postgres_before, generator_before = postgres_cpu_seconds(database), time.process_time()
    count = int(POSTER_RATE * seconds)
    with collector_paused():
        posting = publish(server.url, honest[0], [room], count, POSTER_RATE)
        if attacker is not None:
            acknowledged, reactions = await asyncio.gather(
                posting, react_at_rate(api, attacker[0], target, REACTIONS_PER_SECOND, seconds)
            )
            result.reactions = reactions
        else:
            acknowledged = await posting
        result.messages, result.failed_posts = count, count - len(acknowledged)
        result.expected = len(acknowledged) * len(subs)
        await until_read(subs, result.expected, 30)
    elapsed = time.monotonic() - started
    result.cpu_percent = (tree_cpu_seconds(server.process.pid) - cpu_before) / elapsed * 100
    result.postgres_percent = (postgres_cpu_seconds(database) - postgres_before) / elapsed * 100
    result.generator_percent = (time.process_time() - generator_before) / elapsed * 100
    latencies = [latency for sub in subs for latency in sub.latencies]
    distinct = sum(len(sub.seen) for sub in subs)
    result.received = sum(sum(sub.seen.values()) for sub in subs)
    result.missing, result.duplicates = result.expected - distinct, result.received - distinct
    result.error_frames = sum(sub.errors for sub in subs)
    result.other_events = sum(getattr(sub, "other_events", 0) for sub in subs)
    result.closed = Counter(code for sub in subs if (code := getattr(sub, "closed_with", None)) is not None)
    result.p50_ms, result.p99_ms = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    result.max_ms = max(latencies, default=float("nan")) * 1000
    for name in HONEST_FIELDS:  # open_honest's order: each field in turn
        group = [sub for number, sub in enumerate(subs) if HONEST_FIELDS[number % 2] == name]
        times = [latency for sub in group for latency in sub.latencies]
        missing = len(acknowledged) * len(group) - sum(len(sub.seen) for sub in group)
        result.by_field[name] = (percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000, missing)
    result.subscriptions = Counter(flood.verdict(operation) or "silent" for flood, operation in operations)
    result.attacker_results = sum(sum(flood.results.values()) for flood in floods)
    result.attacker_mib = sum(flood.bytes for flood in floods) / 2**20
    for sub in subs:
        sub.close()
    for flood in floods:
        flood.close()
    await until_quiet(server.process.pid)
    return result


async def live(database_url: str, seconds: float) -> tuple[list[Round], dict[str, tuple[tuple[int, int] | None, dict]]]:
    async with stack(database_url) as (server, _redis):
        api = Api(server.url)
        try:
            progress(f"signing up {USERS + 2} users")
            honest = await api.sign_up(USERS)
            attacker, scout = await api.sign_up(2)
            room = (await api.gql(CREATE_ROOM, token=honest[0]))["createRoom"]["id"]
            for token in [*honest[1:], attacker, scout]:
                await api.gql(JOIN, {"r": room}, token)
            target = (await api.gql(CREATE_MESSAGE, {"room": room, "body": f"{time.time():.6f} target"}, honest[0]))[
                "createMessage"
            ]["id"]
            progress("the ladder of sizes")
            ladders = {name: await probe(server, api, scout, honest[0], room, name) for name in ATTACK_FIELDS}
            # None accepted: the lightest, to count its refusals all the same.
            shapes = {name: chosen or LADDER[-1] for name, (chosen, _) in ladders.items()}
            await live_round("warm-up", server, api, honest, room, target, 3.0, None)
            rounds = [
                await live_round("without attacker", server, api, honest, room, target, seconds, None),
                await live_round("with attacker", server, api, honest, room, target, seconds, (attacker, shapes)),
                await live_round("without, after", server, api, honest, room, target, seconds, None),
            ]
        finally:
            await api.close()
    return rounds, ladders


# -- caches ----------------------------------------------------------------------------------


def padded(number: int, size: int) -> str:
    head = f"{{__typename}}\n#{number:08d} "
    return head + "x" * max(0, size - len(head))


@dataclass
class Cache:
    label: str
    answers: Counter[str] = field(default_factory=Counter)
    rss_before: list[int] = field(default_factory=list)  # per worker, by pid
    rss_after: list[int] = field(default_factory=list)
    workers_replaced: bool = False
    redis_before: int = 0
    redis_after: int = 0
    redis_keys: int = 0
    seconds: float = 0.0


def redis_memory(redis: PrivateRedis) -> int:
    fields = dict(line.split(":", 1) for line in redis.cli("info", "memory").split() if ":" in line)
    return int(fields["used_memory"])


def database_name(server: Server) -> str:
    return server.env["DATABASE_URL"].rsplit("/", 1)[1]


def worker_rss(master: int) -> dict[int, int]:
    return {pid: rss(pid) for pid in sorted(children(master))}


async def send_all(server: Server, bodies: Iterator[bytes], token: str | None, clients: int = 8) -> Counter[str]:
    """Every body POSTed on `clients` kept-alive connections opened 5 ms apart (so both workers
    get some): the answers by status and code."""
    url = httpx.URL(server.url)
    host, port = url.host, url.port or 80
    answers: Counter[str] = Counter()
    requests = ((None, post_request(host, port, body, token)) for body in bodies)

    def answered(_label: None, head: bytes, payload: bytes, _seconds: float) -> None:
        status = head.split(b" ", 2)[1].decode()
        try:
            code = error_code(orjson.loads(payload))
        except orjson.JSONDecodeError:
            code = "not JSON"
        answers[f"{status} {code}"] += 1

    def failed(_label: None, error: Exception) -> None:
        answers[f"connection: {type(error).__name__}"] += 1

    async def client(number: int) -> None:
        await asyncio.sleep(number * 0.005)
        await keep_alive(host, port, requests, answered, failed)

    await asyncio.gather(*(client(number) for number in range(clients)))
    return answers


VARIANTS = {
    "one small query": (False, False, False),  # (distinct padded, persisted, signed in)
    "padded, plain": (True, False, False),
    "padded, APQ anonymous": (True, True, False),
    "padded, APQ signed in": (True, True, True),
}


def body_of(number: int, size: int, distinct: bool, persisted: bool) -> bytes:
    query = padded(number, size) if distinct else "{__typename}"
    payload: dict = {"query": query}
    if persisted:
        digest = hashlib.sha256(query.encode()).hexdigest()
        payload["extensions"] = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    return orjson.dumps(payload)


async def caches(database_url: str, label: str, count: int, size: int) -> Cache:
    progress(f"caches: {label}")
    distinct, persisted, signed_in = VARIANTS[label]
    result = Cache(label)
    async with stack(database_url) as (server, redis):
        assert server.process is not None
        api = Api(server.url)
        try:
            token = (await api.sign_up(1))[0] if signed_in else None
        finally:
            await api.close()
        # What a worker allocates once (imports, its first requests, the small query's cache
        # entry) is not the documents': 400 small requests first, over both workers.
        await send_all(server, (orjson.dumps({"query": "{__typename}"}) for _ in range(400)), token)
        await asyncio.sleep(1)
        before = worker_rss(server.process.pid)
        result.rss_before = list(before.values())
        result.redis_before = redis_memory(redis)
        started = time.monotonic()
        result.answers = await send_all(
            server, (body_of(number, size, distinct, persisted) for number in range(count)), token
        )
        result.seconds = time.monotonic() - started
        await asyncio.sleep(1)
        after = worker_rss(server.process.pid)
        result.workers_replaced = list(after) != list(before)
        result.rss_after = list(after.values())
        result.redis_after = redis_memory(redis)
        result.redis_keys = int(redis.cli("dbsize").strip() or 0)
    return result


# -- report ----------------------------------------------------------------------------------


def mib(value: int) -> str:
    return f"{value / 2**20:.1f}"


def columns(name: str, values: list[str], width: int = 22) -> None:
    print(f"  {name:44} " + " ".join(f"{value:>{width}}" for value in values))


def report_live(rounds: list[Round], ladders: dict, seconds: float) -> None:
    print(
        f"\nLive delivery: {HONEST} honest subscribers ({USERS} users) in one room (half messageCreated, half "
        "roomEvents), "
        f"a poster at {POSTER_RATE:.0f} msg/s for {seconds:.0f} s a round; the attacker, a member, holds "
        f"{ATTACK_SUBSCRIPTIONS} distinct heavy subscriptions ({PER_SOCKET} a WebSocket) and reacts "
        f"{REACTIONS_PER_SECOND:.0f} times a second"
    )
    for name, (chosen, verdicts) in ladders.items():
        print(f"  {name}: the heaviest selection accepted: {shape_name(chosen) if chosen else 'none'}")
        others: dict[str, list[str]] = {}
        for shape, verdict in verdicts.items():
            if verdict != "accepted":
                others.setdefault(verdict, []).append(f"{shape[1]}x{shape[0]}")
        print(f"    of a ladder of {len(verdicts)} (first x levels), not accepted:")
        for verdict, shapes in others.items() or [("none", [])]:
            print(f"      {verdict}: {', '.join(shapes)}")
    columns("", [r.label for r in rounds] + ["with/without"])

    def row(name: str, values: list[float], decimals: int = 1, ratio: bool = False) -> None:
        shown = [f"{value:,.{decimals}f}" for value in values]
        ratio_text = f"{values[1] / values[0]:.2f}x" if ratio and values[0] else ""
        columns(name, [*shown, ratio_text])

    row("messages posted", [r.messages for r in rounds], 0)
    row("  of which refused", [r.failed_posts for r in rounds], 0)
    row("deliveries expected", [r.expected for r in rounds], 0)
    row("missing (not in 30 s after the last post)", [r.missing for r in rounds], 0)
    row("duplicates", [r.duplicates for r in rounds], 0)
    row("error frames", [r.error_frames for r in rounds], 0)
    row("other events received (reactions)", [r.other_events for r in rounds], 0)
    row("sockets the server closed", [sum(r.closed.values()) for r in rounds], 0)
    for code in sorted({code for r in rounds for code in r.closed}):
        row(f"  with {code}", [r.closed.get(code, 0) for r in rounds], 0)
    row("latency p50 (ms)", [r.p50_ms for r in rounds], ratio=True)
    row("latency p99 (ms)", [r.p99_ms for r in rounds], ratio=True)
    row("latency max (ms)", [r.max_ms for r in rounds], ratio=True)
    for name in HONEST_FIELDS:
        shown = "roomEvents" if name.startswith("roomEvents") else name
        row(f"  {shown}: latency p50 (ms)", [r.by_field[name][0] for r in rounds], ratio=True)
        row(f"  {shown}: latency p99 (ms)", [r.by_field[name][1] for r in rounds], ratio=True)
        row(f"  {shown}: missing", [r.by_field[name][2] for r in rounds], 0)
    row("server CPU (% of one core)", [r.cpu_percent for r in rounds], ratio=True)
    row("Postgres CPU, this database (% of one core)", [r.postgres_percent for r in rounds], ratio=True)
    row("load generator CPU (% of one core)", [r.generator_percent for r in rounds], ratio=True)
    attacked = rounds[1]
    print("  the attacker's subscriptions:")
    for verdict, number in attacked.subscriptions.most_common():
        print(f"    {verdict:60} {number:>6}")
    print(f"    results received: {attacked.attacker_results:,} ({attacked.attacker_mib:,.1f} MiB)")
    print("  the attacker's reactions, by answer:")
    for answer, number in attacked.reactions.most_common():
        print(f"    {answer:60} {number:>6}")


def report_caches(results: list[Cache], count: int, size: int) -> None:
    print(
        f"\nCaches: {count:,} requests each, distinct documents of {size:,} bytes ({{__typename}} and a # comment) "
        "beside one small query; a fresh server (2 workers) and Redis each"
    )
    columns("", [r.label for r in results])
    for answer in sorted({answer for r in results for answer in r.answers}):
        columns(f"answered {answer}", [f"{r.answers.get(answer, 0):,}" for r in results])
    workers = max(len(r.rss_before) for r in results)
    for index in range(workers):
        columns(
            f"worker {index + 1} RSS before -> after (MiB)",
            [
                f"{mib(r.rss_before[index])} -> {mib(r.rss_after[index])}" if index < len(r.rss_after) else "—"
                for r in results
            ],
        )
    columns("workers' RSS growth, all (MiB)", [mib(sum(r.rss_after) - sum(r.rss_before)) for r in results])
    columns("a worker replaced meanwhile", ["yes" if r.workers_replaced else "no" for r in results])
    columns(
        "Redis used_memory before -> after (MiB)", [f"{mib(r.redis_before)} -> {mib(r.redis_after)}" for r in results]
    )
    columns("Redis growth (MiB)", [mib(r.redis_after - r.redis_before) for r in results])
    columns("Redis keys after", [f"{r.redis_keys:,}" for r in results])
    columns("seconds to send", [f"{r.seconds:.1f}" for r in results])


async def main(quick: bool, query_bytes: int) -> None:
    seconds = 8.0 if quick else 20.0
    count = 400 if quick else 2000
    name = unique_name("chat_bench")
    database_url = create_database(name)
    try:
        migrate({"DATABASE_URL": database_url})
        rounds, ladders = await live(database_url, seconds)
        report_live(rounds, ladders, seconds)
        results = [await caches(database_url, label, count, query_bytes) for label in VARIANTS]
        report_caches(results, count, query_bytes)
    finally:
        drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 s rounds and 400 documents, for a smoke run")
    parser.add_argument(
        "--query-bytes",
        type=int,
        default=31 * 1024,
        help="each padded document's size in bytes (default 31 KiB: just under MAX_QUERY_BYTES' 32 KB)",
    )
    arguments = parser.parse_args()
    import uvloop

    uvloop.run(main(arguments.quick, arguments.query_bytes))
