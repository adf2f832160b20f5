"""What webhooks cost the rest: createMessage throughput and p99, and live delivery p99 at
S=1000, with webhooks off, on with a fast receiver, and on with a receiver that is down
(connections refused), in one run against the real stack (2 workers, Postgres, Redis). Prints
figures, asserts nothing.

    python -m bench.webhooks [--quick] [--rounds N]

Fairness: each round runs every mode once, the modes' order rotated round by round (a machine
getting busier or quieter during the run lands on every mode alike), each mode under the same
load on a fresh server over the same database. Each figure is printed as the median over the
rounds with its spread (min..max), and its ratio to the median with webhooks off.

Each round's endpoints are new URLs (a path of their own), so a mode never inherits an earlier
round's backlog: an endpoint hears what happens from its registration on.

The fast receiver is a process of its own (`--receive PORT`): raw asyncio, a 200 to every POST,
and, on `GET /<path>`, the POSTs to that path and the distinct ids of its `message.created`
deliveries (so `webhooks missing` counts messages acknowledged to their poster but never
delivered after the drain, duplicates not counted as delivered).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import httpx
import orjson

from bench.loadgen import http_load, percentile, tree_cpu_seconds
from bench.run import FanOut, Stack
from tests.support.processes import ROOT, create_database, drop_database, free_port, migrate, unique_name

WRITERS = 20  # keep-alive clients posting createMessage, spread over ROOMS rooms
ROOMS = 10
DRAIN_SECONDS = 60.0  # the most the fast receiver is waited for after the writes
OFF, FAST, DOWN = "off", "on, fast receiver", "on, receiver down"
MODES = (OFF, FAST, DOWN)


async def receive(port: int) -> None:
    """A 200 to every POST; `GET /<path>` answers `{"posts", "created"}` for that path."""
    posts: dict[bytes, int] = defaultdict(int)
    created: dict[bytes, set[bytes]] = defaultdict(set)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                length = 0
                webhook_id = b""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-chat-webhook-id":
                        webhook_id = value.strip()
                payload = await reader.readexactly(length) if length else b""
                if head.startswith(b"POST"):
                    posts[path] += 1
                    if b'"type":"message.created"' in payload:
                        created[path].add(webhook_id)
                    body = b""
                else:
                    body = orjson.dumps({"posts": posts[path], "created": len(created[path])})
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start_receiver(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.webhooks", "--receive", str(port)], cwd=ROOT)


def received(port: int, path: str) -> dict[str, int]:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).json()


async def writes(stack: Stack, rooms: list[str], seconds: float) -> tuple[float, float, int, int]:
    """createMessage from WRITERS keep-alive clients over `rooms`: per second, p99 (ms), errors,
    and the messages acknowledged."""
    url = httpx.URL(stack.server.url)
    per_room = max(1, WRITERS // len(rooms))
    runs = await asyncio.gather(
        *(
            http_load(
                url.host,
                url.port or 80,
                stack.tokens[0],
                per_room,
                seconds,
                f'mutation {{ createMessage(room: "{room}", body: "bench") {{ id }} }}',
                ramp=0.05,
            )
            for room in rooms
        )
    )
    latencies = [latency for run in runs for latency in run.latencies]
    requests = sum(run.requests for run in runs)
    errors = sum(run.errors for run in runs)
    elapsed = max(run.seconds for run in runs)
    return requests / elapsed, percentile(latencies, 0.99) * 1000, errors, requests - errors


async def one_mode(
    mode: str, database_url: str, env: dict[str, str], receiver_port: int, path: str, scale: int, seconds: float
) -> dict[str, float]:
    """One mode's figures on a fresh server: live p99 and missing (S=1000/scale, 20 msg/s), then
    createMessage under WRITERS clients, then (fast receiver) the drain."""
    stack = Stack("fast", database_url, {**env, "WEBHOOK_SECRET": "bench"} if env else {})
    try:
        warm = await stack.fan_out(200 // scale, 1, 20.0, 40 // scale, "messageCreated")  # not kept
        live: FanOut = await stack.fan_out(1000 // scale, 1, 20.0, 400 // scale, "messageCreated")
        rooms = stack.rooms(ROOMS)
        cpu_before = tree_cpu_seconds(stack.pid)
        rate, p99, errors, acknowledged = await writes(stack, rooms, seconds)
        row = {
            "createMessage per second": rate,
            "createMessage p99 (ms)": p99,
            "createMessage errors": float(errors),
            "live p99 (ms)": live.p99_ms,
            "live missing": float(live.missing),
        }
        if mode == FAST:
            posted = (warm.messages - warm.failed_posts) + (live.messages - live.failed_posts) + acknowledged
            started = time.monotonic()
            while received(receiver_port, path)["created"] < posted and time.monotonic() - started < DRAIN_SECONDS:
                await asyncio.sleep(0.2)
            row["webhooks drained after the writes (s)"] = time.monotonic() - started
            row["webhooks missing"] = float(posted - received(receiver_port, path)["created"])
        # Server CPU per message posted, its deliveries included (CPU time: what a busy
        # machine's contention distorts least).
        row["server CPU per createMessage (us)"] = (
            (tree_cpu_seconds(stack.pid) - cpu_before) / max(1, acknowledged) * 1e6
        )
        return row
    finally:
        stack.stop()


async def main(quick: bool, rounds: int) -> None:
    scale = 5 if quick else 1
    seconds = 3.0 if quick else 10.0
    receiver_port, down_port = free_port(), free_port()
    receiver = start_receiver(receiver_port)
    name = unique_name("chat_bench_hooks")
    database_url = create_database(name)
    figures: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        migrate({"DATABASE_URL": database_url})
        for round_ in range(rounds):
            order = MODES[round_ % len(MODES) :] + MODES[: round_ % len(MODES)]
            for mode in order:
                print(f"round {round_ + 1}/{rounds}: webhooks {mode} ...", file=sys.stderr)
                path = f"/hook/{round_}"
                env = {
                    OFF: {},
                    FAST: {"WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}{path}"},
                    DOWN: {"WEBHOOK_URL": f"http://127.0.0.1:{down_port}{path}"},
                }[mode]
                figures[mode].append(await one_mode(mode, database_url, env, receiver_port, path, scale, seconds))
    finally:
        receiver.terminate()
        receiver.wait(10)
        drop_database(name)
    report(figures, scale, rounds)


def report(figures: dict[str, list[dict[str, float]]], scale: int, rounds: int) -> None:
    """Median (min..max) per figure and mode, and each mode's median over off's."""
    names = list(dict.fromkeys(label for rows in figures.values() for row in rows for label in row))
    print(
        f"\nWebhooks: createMessage ({WRITERS} clients over {ROOMS} rooms), live p99 (S={1000 // scale}, "
        f"20 msg/s); median (min..max) of {rounds} rounds, modes alternated; x: median over off's"
    )
    print(f"  {'':38}" + "".join(f"{mode:>28}" for mode in figures))
    for label in names:
        cells = []
        off = [row[label] for row in figures[OFF] if label in row]
        for mode in figures:
            values = [row[label] for row in figures[mode] if label in row]
            if not values:
                cells.append(f"{'—':>28}")
                continue
            median = statistics.median(values)
            cell = f"{median:.1f} ({min(values):.0f}..{max(values):.0f})"
            if mode != OFF and off and statistics.median(off) > 0:
                cell += f" x{median / statistics.median(off):.2f}"
            cells.append(f"{cell:>28}")
        print(f"  {label:38}" + "".join(cells))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the subscribers, shorter runs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode, alternated (default 3)")
    parser.add_argument("--receive", type=int, help="run the fast receiver on this port")
    arguments = parser.parse_args()
    import uvloop

    if arguments.receive:
        uvloop.run(receive(arguments.receive))
    else:
        uvloop.run(main(arguments.quick, max(1, arguments.rounds)))
