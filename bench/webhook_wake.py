"""How long the `worker:` process (python -m composition.webhooks) takes from an event's commit
to its receiver: polling only (the worker given no Redis, as it was before it heard room events)
against woken by the room events the web workers publish on Redis. One run, the two alternating
round by round, against the real stack (gunicorn with 2 workers and WEBHOOK_IN_WEB=0, Postgres,
Redis, a receiver on loopback), WEBHOOK_POLL_SECONDS at its default. Each sample is a fresh
room's first message (no lease lingers on the room): its `at` (stamped in the transaction) to
the receiver's clock, waited for before the next. Prints figures, asserts nothing.

    python -m bench.webhook_wake [--rounds 3] [--samples 10]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import time
import uuid
from datetime import datetime

from tests.support.graphql import GraphQLClient, create_room, post_message, sign_up
from tests.support.processes import (
    SHARED_REDIS_URL,
    Server,
    create_database,
    drop_database,
    migrate,
    unique_name,
)
from tests.support.waiting import until
from tests.support.webhooks import Receiver, start_worker_logged

CREATED = "message.created"
MODES = {"poll only": "Delivering webhooks", "woken": "Hearing room events"}


async def main(rounds: int, samples: int) -> None:
    name = unique_name("chat_wake")
    url = create_database(name)
    receiver = Receiver().start()
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:10]}:",
        "WEBHOOK_URL": receiver.url,
        "WEBHOOK_SECRET": "bench",
        "WEBHOOK_IN_WEB": "0",
    }
    server = None
    found: dict[str, list[list[float]]] = {mode: [] for mode in MODES}
    try:
        migrate({"DATABASE_URL": url})
        server = Server(env=env, workers=2).start()
        api = GraphQLClient(server.url)
        owner = sign_up(api, "Owner")
        for round_ in range(rounds):
            for mode, ready in MODES.items():
                worker_env = {**env, "REDIS_URL": ""} if mode == "poll only" else env
                worker, logs = start_worker_logged(worker_env)
                try:

                    def started(ready: str = ready, logs: list[str] = logs) -> bool:
                        return any(ready in line for line in logs)

                    await until(started, f"the worker ({mode})", 30)
                    latencies = []
                    for n in range(samples):
                        room = create_room(api, owner, f"{mode} {round_} {n}")
                        post_message(api, owner, room, "sample")

                        def arrived(room: str = room) -> bool:
                            return any(r.room == room and r.payload["type"] == CREATED for r in receiver.snapshot())

                        await until(arrived, "the delivery", 30)
                        first = next(r for r in receiver.snapshot() if r.room == room and r.payload["type"] == CREATED)
                        at = datetime.fromisoformat(first.payload["at"]).timestamp()
                        latencies.append((first.arrived - at) * 1000)
                    found[mode].append(latencies)
                finally:
                    worker.send_signal(signal.SIGTERM)
                    worker.wait(15)
        api.close()
    finally:
        if server is not None:
            server.stop()
        receiver.stop()
        drop_database(name)
    print(f"commit -> receiver, ms ({rounds} rounds x {samples} fresh rooms each, modes alternating)")
    for mode, per_round in found.items():
        every = sorted(value for latencies in per_round for value in latencies)
        medians = [statistics.median(latencies) for latencies in per_round]
        print(
            f"  {mode:9}  median {statistics.median(every):7.1f}  p90 {every[int(len(every) * 0.9) - 1]:7.1f}"
            f"  max {every[-1]:7.1f}  round medians {' '.join(f'{m:.1f}' for m in medians)}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10)
    arguments = parser.parse_args()
    started = time.monotonic()
    asyncio.run(main(arguments.rounds, arguments.samples))
    print(f"({time.monotonic() - started:.0f} s)")
