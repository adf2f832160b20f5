"""The benchmark: the real stack (the Procfile's web command, 2 workers, Postgres, Redis), then
the naive baseline (bench/naive_app.py) with the same settings, under the same load; every
figure printed side by side with its ratio. Prints figures, asserts nothing.

    make bench            # or: python -m bench.run [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bench.loadgen import http_load, open_subscribers, publish, tree_cpu_seconds, tree_rss
from tests.support.processes import SHARED_REDIS_URL, Server, create_database, drop_database, migrate, unique_name

APPS = {"fast": "app:app", "naive": "bench.naive_app:app"}


@dataclass
class FanOut:
    subscribers: int
    rooms: int
    rate: float
    messages: int
    expected: int = 0
    failed_posts: int = 0
    error_frames: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    cpu_us_per_delivery: float = 0.0
    kib_per_idle_connection: float = 0.0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Stack:
    """One server (fast or naive) with its accounts; `env` adds to or overrides its settings."""

    def __init__(self, kind: str, database_url: str, env: dict[str, str] | None = None) -> None:
        settings = {
            "DATABASE_URL": database_url,
            "REDIS_URL": SHARED_REDIS_URL,
            "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
            "RATE_LIMIT_MESSAGES": "1000000/1",
            "RATE_LIMIT_AUTH": "1000000/1",
            "MAX_REQUESTS": "0",
            "WS_MAX_SUBSCRIPTIONS": "100",
            "WS_SEND_QUEUE": "100000",
            "LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.kind = kind
        self.server = Server(env=settings, workers=2, app=APPS[kind]).start(timeout=60)
        assert self.server.process is not None
        self.pid = self.server.process.pid
        self.http = httpx.Client(base_url=self.server.url, timeout=60)
        self.tokens = [self.sign_up(i) for i in range(20)]

    def gql(self, query: str, variables: dict | None = None, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = self.http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers).json()
        assert "errors" not in body, body
        return body["data"]

    def sign_up(self, i: int) -> str:
        mutation = 'mutation($e: String!) { signUp(name: "bench", email: $e, password: "benchmark!") { token } }'
        return self.gql(mutation, {"e": f"bench{i}-{uuid.uuid4().hex[:8]}@example.com"})["signUp"]["token"]

    def rooms(self, count: int) -> list[str]:
        rooms = [self.gql('mutation { createRoom(name: "bench") { id } }', token=self.tokens[0])["createRoom"]["id"]
                 for _ in range(count)]  # fmt: skip
        for token in self.tokens[1:]:
            for room in rooms:
                self.gql("mutation($r: ID!) { joinRoom(room: $r) { id } }", {"r": room}, token)
        return rooms

    async def fan_out(self, subscribers: int, rooms: int, rate: float, messages: int) -> FanOut:
        result = FanOut(subscribers, rooms, rate, messages)
        room_ids = self.rooms(rooms)
        # What a worker allocates once (imports, caches, its first subscription) is not any one
        # connection's: 20 warm-up subscribers, held until the reading is taken, as bench.idle_memory.
        warm = await open_subscribers(self.server.ws_url, self.tokens, room_ids, 20)
        await asyncio.sleep(1)
        before = tree_rss(self.pid)
        subs = await open_subscribers(self.server.ws_url, self.tokens, room_ids, subscribers)
        await asyncio.sleep(2)
        result.kib_per_idle_connection = (tree_rss(self.pid) - before) / subscribers / 1024
        for sub in warm:
            sub.close()
        per_room = [sum(1 for i in range(subscribers) if i % rooms == r) for r in range(rooms)]
        cpu_before = tree_cpu_seconds(self.pid)
        acknowledged = await publish(self.server.url, self.tokens[0], room_ids, messages, rate)
        result.failed_posts = messages - len(acknowledged)
        result.expected = sum(per_room[i % rooms] for i in acknowledged)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(len(sub.seen) for sub in subs) < result.expected:
            await asyncio.sleep(0.1)
        cpu_after = tree_cpu_seconds(self.pid)
        latencies = [latency for sub in subs for latency in sub.latencies]
        distinct = sum(len(sub.seen) for sub in subs)
        result.received = sum(sum(sub.seen.values()) for sub in subs)
        result.error_frames = sum(sub.errors for sub in subs)
        result.missing = result.expected - distinct
        result.duplicates = result.received - distinct
        result.p50_ms = percentile(latencies, 0.50) * 1000
        result.p99_ms = percentile(latencies, 0.99) * 1000
        result.max_ms = max(latencies, default=float("nan")) * 1000
        result.cpu_us_per_delivery = (cpu_after - cpu_before) / max(1, result.received) * 1e6
        for sub in subs:
            sub.close()
        await asyncio.sleep(1)
        return result

    async def highest_rate(
        self, subscribers: int, rates: list[float], seconds: float
    ) -> tuple[float | None, FanOut | None]:
        """The highest rate whose p99 stays under 250 ms with nothing missing."""
        best: tuple[float | None, FanOut | None] = (None, None)
        for rate in rates:
            run = await self.fan_out(subscribers, 1, rate, int(rate * seconds))
            if run.missing or run.failed_posts or run.p99_ms >= 250:
                break
            best = (rate, run)
        return best

    async def http_throughput(self, clients: int, seconds: float) -> tuple[float, float, float, int]:
        url = httpx.URL(self.server.url)
        result = await http_load(url.host, url.port or 80, self.tokens[0], clients, seconds)
        rps = result.requests / result.seconds
        return rps, percentile(result.latencies, 0.5) * 1000, percentile(result.latencies, 0.99) * 1000, result.errors

    def stop(self) -> None:
        self.http.close()
        self.server.stop()


def table(title: str, rows: list[tuple[str, float | int | str, float | int | str]], better: dict[str, str]) -> None:
    print(f"\n{title}")
    print(f"  {'':34} {'fast':>12} {'naive':>12} {'naive/fast':>11}")
    for name, fast, naive in rows:
        ratio = ""
        if isinstance(fast, float | int) and isinstance(naive, float | int) and fast:
            ratio = f"{naive / fast:.2f}x"
        shown = [f"{v:12.1f}" if isinstance(v, float) else f"{v!s:>12}" for v in (fast, naive)]
        print(f"  {name:34} {shown[0]} {shown[1]} {ratio:>11}  {better.get(name, '')}")


FAN_OUT_ROWS: list[tuple[str, Callable[[FanOut], float | int], str]] = [
    ("posts refused by the server", lambda r: r.failed_posts, ""),
    ("deliveries expected (of acknowledged)", lambda r: r.expected, ""),
    ("deliveries received", lambda r: r.received, ""),
    ("missing", lambda r: r.missing, "target 0"),
    ("duplicates", lambda r: r.duplicates, "target 0"),
    ("error frames", lambda r: r.error_frames, ""),
    ("latency p50 (ms)", lambda r: r.p50_ms, ""),
    ("latency p99 (ms)", lambda r: r.p99_ms, ""),
    ("latency max (ms)", lambda r: r.max_ms, ""),
    ("server CPU per delivery (us)", lambda r: r.cpu_us_per_delivery, ""),
]


async def main(quick: bool) -> None:
    scale = 5 if quick else 1
    scenarios = [
        ("S=1000, 1 room, 20 msg/s", 1000 // scale, 1, 20.0, 100 // scale),
        ("S=200, 1 room, 100 msg/s", 200 // scale, 1, 100.0, 300 // scale),
        ("10 rooms of 100, 20 msg/s", 1000 // scale, 10, 20.0, 100 // scale),
    ]
    rates = [20.0, 32.0, 48.0, 64.0, 96.0, 128.0]
    name = unique_name("chat_bench")
    database_url = create_database(name)
    results: dict[str, dict[str, object]] = {"fast": {}, "naive": {}}
    try:
        migrate({"DATABASE_URL": database_url})
        for kind in ("fast", "naive"):
            print(f"running the {kind} stack ...", file=sys.stderr)
            stack = Stack(kind, database_url)
            try:
                for title, subscribers, rooms, rate, messages in scenarios:
                    results[kind][title] = await stack.fan_out(subscribers, rooms, rate, messages)
                results[kind]["highest"] = await stack.highest_rate(1000 // scale, rates, 2.0 if quick else 3.0)
                results[kind]["http"] = await stack.http_throughput(50, 3.0 if quick else 10.0)
            finally:
                stack.stop()
    finally:
        drop_database(name)

    for title, *_ in scenarios:
        fast, naive = results["fast"][title], results["naive"][title]
        assert isinstance(fast, FanOut) and isinstance(naive, FanOut)
        table(f"Fan-out: {title}", [(label, get(fast), get(naive)) for label, get, _ in FAN_OUT_ROWS],
              {label: note for label, _, note in FAN_OUT_ROWS})  # fmt: skip
    first = scenarios[0][0]
    table(
        f"Memory: server RSS per idle subscribed connection, 2 s after subscribing (the first scenario: {first})",
        [("KiB per connection", results["fast"][first].kib_per_idle_connection,  # type: ignore[union-attr]
          results["naive"][first].kib_per_idle_connection)],  # type: ignore[union-attr]
        {},
    )  # fmt: skip
    fast_rate, _ = results["fast"]["highest"]  # type: ignore[misc]
    naive_rate, _ = results["naive"]["highest"]  # type: ignore[misc]
    table(
        f"Highest rate at S={1000 // scale} with p99 < 250 ms and nothing missing (tried {', '.join(map(str, rates))})",
        [("messages per second", fast_rate or f"<{rates[0]:.0f}", naive_rate or f"<{rates[0]:.0f}")],
        {},
    )
    fast_http, naive_http = results["fast"]["http"], results["naive"]["http"]
    table(
        "HTTP: K=50 clients running { me { id name avatar(size: 32) } }",
        [
            ("requests per second", fast_http[0], naive_http[0]),  # type: ignore[index]
            ("latency p50 (ms)", fast_http[1], naive_http[1]),  # type: ignore[index]
            ("latency p99 (ms)", fast_http[2], naive_http[2]),  # type: ignore[index]
            ("errors", fast_http[3], naive_http[3]),  # type: ignore[index]
        ],
        {},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the load, for a smoke run")
    arguments = parser.parse_args()
    import uvloop

    uvloop.run(main(arguments.quick))
