"""What webhooks cost the rest: createMessage throughput and p99, and live delivery p99 at
S=1000, with webhooks off, on with a fast receiver, and on with a receiver that is down
(connections refused), in one run against the real stack (2 workers, Postgres, Redis). Prints
figures, asserts nothing.

    python -m bench.webhooks [--quick]

The fast receiver is a process of its own (`--receive PORT`): raw asyncio, a 200 to every POST,
and its count of deliveries on GET.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import httpx

from bench.loadgen import http_load, percentile, tree_cpu_seconds
from bench.run import FanOut, Stack
from tests.support.processes import ROOT, create_database, drop_database, free_port, migrate, unique_name

WRITERS = 20  # keep-alive clients posting createMessage, spread over ROOMS rooms
ROOMS = 10


async def receive(port: int) -> None:
    """A 200 to every POST; GET answers how many POSTs came."""
    count = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"POST"):
                    count += 1
                    body = b""
                else:
                    body = str(count).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start_receiver(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.webhooks", "--receive", str(port)], cwd=ROOT)


def received(port: int) -> int:
    return int(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text)


async def writes(stack: Stack, rooms: list[str], seconds: float) -> tuple[float, float, int]:
    """createMessage from WRITERS keep-alive clients over `rooms`: per second, p99 (ms), errors."""
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
    elapsed = max(run.seconds for run in runs)
    return requests / elapsed, percentile(latencies, 0.99) * 1000, sum(run.errors for run in runs)


async def main(quick: bool) -> None:
    scale = 5 if quick else 1
    receiver_port, down_port = free_port(), free_port()
    receiver = start_receiver(receiver_port)
    name = unique_name("chat_bench_hooks")
    database_url = create_database(name)
    modes = {
        "off": {},
        "on, fast receiver": {"WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/hook"},
        "on, receiver down": {"WEBHOOK_URL": f"http://127.0.0.1:{down_port}/hook"},
    }
    figures: dict[str, dict[str, float | int | str]] = {}
    try:
        migrate({"DATABASE_URL": database_url})
        for mode, env in modes.items():
            print(f"running with webhooks {mode} ...", file=sys.stderr)
            stack = Stack("fast", database_url, {**env, "WEBHOOK_SECRET": "bench"} if env else {})
            try:
                await stack.fan_out(200 // scale, 1, 20.0, 40 // scale, "messageCreated")  # warm-up, not kept
                live: FanOut = await stack.fan_out(1000 // scale, 1, 20.0, 400 // scale, "messageCreated")
                rooms = stack.rooms(ROOMS)
                before = received(receiver_port) if "fast" in mode else 0
                cpu_before = tree_cpu_seconds(stack.pid)
                rate, p99, errors = await writes(stack, rooms, 3.0 if quick else 10.0)
                row: dict[str, float | int | str] = {
                    "createMessage per second": rate,
                    "createMessage p99 (ms)": p99,
                    "createMessage errors": errors,
                    f"live p99 at S={1000 // scale} (ms)": live.p99_ms,
                    "live missing": live.missing,
                }
                if "fast" in mode:
                    posted = int(rate * (3.0 if quick else 10.0))
                    started = time.monotonic()
                    deadline = started + 120
                    while received(receiver_port) - before < posted * 0.99 and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                    row["webhooks drained after the writes (s)"] = round(time.monotonic() - started, 1)
                # Server CPU per message posted, its deliveries included (CPU time: what a busy
                # machine's contention distorts least).
                row["server CPU per createMessage (us)"] = (
                    (tree_cpu_seconds(stack.pid) - cpu_before) / max(1.0, rate * (3.0 if quick else 10.0)) * 1e6
                )
                figures[mode] = row
            finally:
                stack.stop()
    finally:
        receiver.terminate()
        receiver.wait(10)
        drop_database(name)
    names = list(dict.fromkeys(label for row in figures.values() for label in row))
    print(f"\nWebhooks: createMessage ({WRITERS} clients over {ROOMS} rooms), live p99 (S={1000 // scale}, 20 msg/s)")
    print(f"  {'':40}" + "".join(f"{mode:>20}" for mode in figures))
    for label in names:
        cells = []
        for mode in figures:
            value = figures[mode].get(label, "—")
            cells.append(f"{value:20.1f}" if isinstance(value, float) else f"{value!s:>20}")
        print(f"  {label:40}" + "".join(cells))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the subscribers, shorter runs")
    parser.add_argument("--receive", type=int, help="run the fast receiver on this port")
    arguments = parser.parse_args()
    import uvloop

    if arguments.receive:
        uvloop.run(receive(arguments.receive))
    else:
        uvloop.run(main(arguments.quick))
