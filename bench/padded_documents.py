"""Issue 24's cache filler, measured: distinct valid documents padded with a comment, sent to one
real worker (gunicorn, Postgres, Redis), and what they leave behind.

Prints the worker's RSS and the bytes our Redis prefix holds for persisted queries, before and
after each round of 2,000 documents: padded to just under MAX_QUERY_BYTES without
`persistedQuery`, then with it (signed in, so they are registered), then padded past the limit.

    .venv/bin/python -m bench.padded_documents [count]
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid

import httpx
from redis import Redis

from tests.support.graphql import GraphQLClient, sign_up
from tests.support.processes import (
    SHARED_REDIS_URL,
    Server,
    create_database,
    drop_database,
    migrate,
    unique_name,
)
from tests.support.wsclient import worker_pids

HEADERS = {"content-type": "application/json", "accept": "application/json"}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def redis_bytes(redis: Redis, prefix: str) -> int:
    """What our persisted queries take in Redis (MEMORY USAGE of each of our keys)."""
    return sum(int(redis.memory_usage(key) or 0) for key in redis.scan_iter(f"{prefix}apq*", count=1000))


def padded(size: int) -> str:
    head = f"query Q{uuid.uuid4().hex} {{ __typename }}\n#"
    return head + "x" * (size - len(head))


def main(count: int) -> None:
    name = unique_name("bench_padded")
    url = create_database(name)
    prefix = f"bench-{uuid.uuid4().hex[:10]}:"
    env = {"DATABASE_URL": url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": prefix}
    migrate(env)
    server = Server(env=env, workers=1).start()
    redis = Redis.from_url(SHARED_REDIS_URL)
    try:
        assert server.process is not None
        (worker,) = worker_pids(server.process.pid)
        client = GraphQLClient(server.url)
        token = sign_up(client, "Bench").token
        client.close()
        limit = 32 * 1024
        rounds = [
            ("plain, just under MAX_QUERY_BYTES", limit - 10, False),
            ("persistedQuery, just under the limit", limit - 10, True),
            ("plain, just over the limit (refused)", limit + 10, False),
        ]
        print(f"{'round':<40} {'answers':<28} {'RSS before':>11} {'RSS after':>10} {'Redis APQ':>12} {'seconds':>8}")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for label, size, persist in rounds:
                before = rss_kib(worker)
                answers: dict[str, int] = {}
                started = time.perf_counter()
                for _ in range(count):
                    query = padded(size)
                    body: dict = {"query": query}
                    headers = dict(HEADERS)
                    if persist:
                        digest = hashlib.sha256(query.encode()).hexdigest()
                        body["extensions"] = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
                        headers["authorization"] = f"Bearer {token}"
                    answer = http.post("/graphql", content=json.dumps(body), headers=headers).json()
                    key = (answer.get("errors") or [{}])[0].get("extensions", {}).get("code", "data")
                    answers[key] = answers.get(key, 0) + 1
                elapsed = time.perf_counter() - started
                after = rss_kib(worker)
                print(
                    f"{label:<40} {json.dumps(answers):<28} {before / 1024:>8.1f} MB {after / 1024:>7.1f} MB "
                    f"{redis_bytes(redis, prefix) / 1024:>9.0f} KB {elapsed:>8.1f}"
                )
    finally:
        server.stop()
        for key in redis.scan_iter(f"{prefix}*", count=1000):
            redis.delete(key)
        redis.close()
        drop_database(name)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
