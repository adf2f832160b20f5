"""Subscriptions over streamed HTTP against WebSocket, on the real stack (the Procfile's gunicorn,
2 workers, Postgres, Redis), in one run: for each transport (graphql-transport-ws, GraphQL over
SSE, Apollo's multipart subscriptions) a fresh server, a warm-up round, then S subscribers to one
room, left idle for the memory reading, then messages at a steady rate for a fixed time. Prints
the figures side by side; asserts nothing.

    python -m bench.http_streams [--quick]      # also part of `make bench`

Memory per idle subscriber is the growth of the server's processes (RSS, and USS: their private
pages) from 20 warm-up subscribers to S more, 2 s after subscribing, divided by S, as bench.run and
bench.idle_memory take it. A multipart result counts once the delimiter after it arrives, as Apollo
Client takes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.loadgen import (
    TRANSPORTS,
    StreamSubscriber,
    Subscriber,
    collector_paused,
    open_stream_subscribers,
    publish,
    tree_cpu_seconds,
    tree_rss,
    tree_uss,
    until_read,
)
from bench.run import Stack, tally
from tests.support.processes import create_database, drop_database, migrate, unique_name

KINDS = tuple(TRANSPORTS)  # websocket, sse, multipart


@dataclass
class StreamRun:
    transport: str
    subscribers: int
    rate: float
    messages: int
    open_seconds: float = 0.0
    rss_kib_per_idle: float = 0.0
    uss_kib_per_idle: float = 0.0
    failed_posts: int = 0
    expected: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    error_results: int = 0
    ended_early: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    cpu_us_per_delivery: float = 0.0


def ended(subscriber: Subscriber | StreamSubscriber) -> bool:
    """The server ended the stream (HTTP streams; a WebSocket's close would show as missing results)."""
    return isinstance(subscriber, StreamSubscriber) and (subscriber.ended or subscriber.completed)


async def fan_out(
    stack: Stack, transport: str, subscribers: int, rate: float, messages: int, method: str, measure_memory: bool
) -> StreamRun:
    """S subscribers to one room over `transport`, `messages` at `rate` per second."""
    result = StreamRun(transport, subscribers, rate, messages)
    method = method if transport == "sse" else "POST"  # multipart subscriptions are POSTed
    room = stack.rooms(1)
    url = stack.server.url + "/graphql"
    # What a worker allocates once (imports, caches, its first stream) is not any one stream's:
    # 20 warm-up subscribers of the same transport, held until the reading is taken.
    warm = await open_stream_subscribers(transport, url, stack.tokens, room, 20, method=method)
    await asyncio.sleep(1)
    rss_before, uss_before = tree_rss(stack.pid), tree_uss(stack.pid)
    started = time.monotonic()
    subs = await open_stream_subscribers(transport, url, stack.tokens, room, subscribers, method=method)
    result.open_seconds = time.monotonic() - started
    await asyncio.sleep(2)
    if measure_memory:
        result.rss_kib_per_idle = (tree_rss(stack.pid) - rss_before) / subscribers / 1024
        result.uss_kib_per_idle = (tree_uss(stack.pid) - uss_before) / subscribers / 1024
    for sub in warm:
        sub.close()
    cpu_before = tree_cpu_seconds(stack.pid)
    with collector_paused():
        acknowledged = await publish(stack.server.url, stack.tokens[0], room, messages, rate)
        result.failed_posts = messages - len(acknowledged)
        result.expected = len(acknowledged) * subscribers
        await until_read(subs, result.expected)
    tally(result, subs, tree_cpu_seconds(stack.pid) - cpu_before)
    result.error_results = sum(sub.errors for sub in subs)
    result.ended_early = sum(1 for sub in subs if ended(sub))
    for sub in subs:
        sub.close()
    await asyncio.sleep(1)
    return result


ROWS: list[tuple[str, Callable[[StreamRun], float | int], str]] = [
    ("subscribers opened in (s)", lambda r: r.open_seconds, ""),
    ("server RSS KiB per idle subscriber", lambda r: r.rss_kib_per_idle, "target: at most WebSocket's"),
    ("server USS KiB per idle subscriber", lambda r: r.uss_kib_per_idle, "target: at most WebSocket's"),
    ("posts refused by the server", lambda r: r.failed_posts, ""),
    ("deliveries expected (of acknowledged)", lambda r: r.expected, ""),
    ("deliveries received", lambda r: r.received, ""),
    ("missing", lambda r: r.missing, "target 0"),
    ("duplicates", lambda r: r.duplicates, "target 0"),
    ("error results", lambda r: r.error_results, "target 0"),
    ("streams ended by the server", lambda r: r.ended_early, "target 0"),
    ("latency p50 (ms)", lambda r: r.p50_ms, ""),
    ("latency p99 (ms)", lambda r: r.p99_ms, ""),
    ("latency max (ms)", lambda r: r.max_ms, ""),
    ("server CPU per delivery (us)", lambda r: r.cpu_us_per_delivery, ""),
]


def report(title: str, runs: dict[str, StreamRun]) -> None:
    print(f"\n{title}")
    print(f"  {'':38} {'websocket':>11} {'sse':>11} {'multipart':>11} {'sse/ws':>9} {'multi/ws':>9}")
    for label, get, note in ROWS:
        values = [get(runs[kind]) for kind in KINDS]
        shown = [f"{v:11.1f}" if isinstance(v, float) else f"{v:>11}" for v in values]
        ratios = [f"{v / values[0]:.2f}x" if values[0] and isinstance(v, float) else "" for v in values[1:]]
        print(f"  {label:38} {' '.join(shown)} {ratios[0]:>9} {ratios[1]:>9}  {note}")
    ws = runs["websocket"]
    print("\nTarget: an idle SSE or multipart stream costs no more server memory than an idle WebSocket.")
    for kind in KINDS[1:]:
        run = runs[kind]
        for name, mine, theirs in (
            ("RSS", run.rss_kib_per_idle, ws.rss_kib_per_idle),
            ("USS", run.uss_kib_per_idle, ws.uss_kib_per_idle),
        ):
            verdict = "met" if mine <= theirs else "MISSED"
            percent = (mine / theirs - 1) * 100 if theirs else 0.0
            print(f"  {kind}: {name} {mine:.1f} KiB per idle stream, WebSocket {theirs:.1f} KiB "
                  f"({mine - theirs:+.1f} KiB, {percent:+.0f}%), {verdict}")  # fmt: skip


async def main(quick: bool, subscribers: int | None, seconds: float | None, rate: float, method: str) -> None:
    scale = 5 if quick else 1
    count = subscribers or 1000 // scale
    duration = seconds or (4.0 if quick else 10.0)
    messages = int(rate * duration)
    name = unique_name("chat_bench")
    database_url = create_database(name)
    runs: dict[str, StreamRun] = {}
    load_before = os.getloadavg()[0]
    try:
        migrate({"DATABASE_URL": database_url})
        for kind in KINDS:
            print(f"running {kind} ...", file=sys.stderr)
            stack = Stack("fast", database_url)  # a fresh server each: no transport inherits another's heap
            try:
                # Steady state, not start-up: a first round whose figures are not kept, as bench.run.
                await fan_out(stack, kind, 200 // scale, 20.0, 40 // scale, method, measure_memory=False)
                runs[kind] = await fan_out(stack, kind, count, rate, messages, method, measure_memory=True)
            finally:
                stack.stop()
    finally:
        drop_database(name)
    sse = "GET" if method == "GET" else "POST"
    report(
        f"Streams: S={count} in one room, {rate:g} msg/s for {duration:g} s, 2 workers (SSE requests by {sse})", runs
    )
    # The generator, Postgres and Redis share the machine with the server: anything else running
    # (a test suite) moves the latency and CPU figures.
    print(f"\nLoad average (1 min) at the start {load_before:.2f}, at the end {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs.")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fifth of the subscribers, 4 s, for a smoke run")
    parser.add_argument("--subscribers", type=int, help="S (default 1000; 200 with --quick)")
    parser.add_argument("--seconds", type=float, help="how long messages are posted (default 10; 4 with --quick)")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second (default 20)")
    parser.add_argument("--sse-method", choices=("POST", "GET"), default="POST", help="how SSE subscribes")
    arguments = parser.parse_args()
    import uvloop

    uvloop.run(main(arguments.quick, arguments.subscribers, arguments.seconds, arguments.rate, arguments.sse_method))
