"""2,000 idle WebSocket subscribers on one worker, then a burst of messages: does the server's
memory stay bounded? Prints the per-connection figure; asserts nothing (a benchmark).

    python -m bench.idle_memory [--connections 2000] [--burst 50]

The client reads every frame in one process on the same two cores: past about 100,000 frames
it, not the server, sets the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.support.processes import SHARED_REDIS_URL, Server, create_database, drop_database, migrate, unique_name

SUBSCRIPTION = (
    "subscription($r: ID!) { messageCreated(room: $r) { id body createdAt sender { id name avatar(size: 32) } } }"
)


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(child) for child in children.read().split())
        except FileNotFoundError:
            continue
    return total


async def subscriber(server: Server, token: str, room: str) -> ClientConnection:
    ws = await connect(server.ws_url, subprotocols=["graphql-transport-ws"], max_size=None)  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    await ws.recv()
    await ws.send(
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": {"r": room}}})
    )
    return ws


async def receive(ws: ClientConnection, count: int, deadline: float) -> int:
    received = 0
    try:
        while received < count:
            frame = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            if '"type":"next"' in frame:  # cheaper than decoding: the client must not be the bottleneck
                received += 1
            elif '"type":"ping"' in frame:
                await ws.send('{"type":"pong"}')
    except (TimeoutError, Exception):
        pass
    return received


async def run(connections: int, burst: int) -> None:
    name = unique_name("chat_bench")
    url = create_database(name)
    env = {"DATABASE_URL": url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
           "MAX_REQUESTS": "0", "WS_SEND_QUEUE": str(burst + 16),
           # Every connection is one account's here: the per-user live bounds are not measured.
           "MAX_SUBSCRIPTIONS_PER_USER": "1000000", "MAX_CONNECTIONS_PER_USER": "1000000"}  # fmt: skip
    server: Server | None = None
    try:
        migrate({"DATABASE_URL": url})
        server = Server(env=env, workers=1).start()
        assert server.process is not None
        http = httpx.AsyncClient(base_url=server.url, timeout=30)
        signup = 'mutation($e: String!) { signUp(name: "bench", email: $e, password: "benchmark!") { token } }'
        reply = await http.post("/graphql", json={"query": signup, "variables": {"e": f"{uuid.uuid4().hex}@b.io"}})
        token = reply.json()["data"]["signUp"]["token"]
        headers = {"Authorization": f"Bearer {token}"}
        room = (
            await http.post("/graphql", json={"query": 'mutation { createRoom(name: "b") { id } }'}, headers=headers)
        ).json()
        room_id = room["data"]["createRoom"]["id"]

        warm = [await subscriber(server, token, room_id) for _ in range(20)]
        await asyncio.sleep(1)
        before = tree_rss(server.process.pid)
        sockets: list[ClientConnection] = []
        for start in range(0, connections, 200):
            batch = min(200, connections - start)
            sockets += await asyncio.gather(*(subscriber(server, token, room_id) for _ in range(batch)))
        await asyncio.sleep(2)
        idle = tree_rss(server.process.pid)

        samples: list[int] = []
        sampling = True

        async def sample() -> None:
            while sampling:
                samples.append(tree_rss(server.process.pid))  # type: ignore[union-attr]
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        deadline = started + 120
        readers = [asyncio.create_task(receive(ws, burst, deadline)) for ws in sockets + warm]
        mutation = "mutation($r: ID!, $b: String!) { createMessage(room: $r, body: $b) { id } }"
        posts = [
            http.post(
                "/graphql", json={"query": mutation, "variables": {"r": room_id, "b": f"burst {i}"}}, headers=headers
            )
            for i in range(burst)
        ]
        await asyncio.gather(*posts)
        received = await asyncio.gather(*readers)
        elapsed = time.monotonic() - started
        sampling = False
        await sampler
        await asyncio.sleep(2)
        after = tree_rss(server.process.pid)

        total = len(sockets) + len(warm)
        print(f"idle connections           {len(sockets)} subscribed, on one worker")
        print(f"server RSS before / idle   {before / 2**20:.1f} MiB / {idle / 2**20:.1f} MiB")
        print(f"per idle connection        {(idle - before) / len(sockets) / 1024:.1f} KiB")
        print(f"burst                      {burst} messages to {total} subscribers in {elapsed:.2f} s")
        print(f"deliveries                 {sum(received)} of {burst * total} expected")
        peak, median = max(samples) / 2**20, statistics.median(samples) / 2**20
        print(f"peak RSS during burst      {peak:.1f} MiB (+{peak - idle / 2**20:.1f} MiB over idle)")
        print(f"RSS after burst            {after / 2**20:.1f} MiB (median sample {median:.1f} MiB)")
        for ws in sockets + warm:
            await ws.close()
        await http.aclose()
    finally:
        if server is not None:
            server.stop()
        drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.connections, args.burst))


if __name__ == "__main__":
    main()
