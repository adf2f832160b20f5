"""A burst of concurrent logIns against one gunicorn worker: its peak RSS (VmHWM) before and after,
how long the burst took and what it answered. Run from a checkout's root (this one, or an older
one to compare):

    PATH=$PWD/.venv/bin:$PATH .venv/bin/python -m bench.login_burst [--burst 50] [--env NAME=VALUE ...]

Each logIn verifies an argon2id hash (64 MiB while it runs): the peak is how many ran at once.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from tests.support.processes import SHARED_REDIS_URL, Server, create_database, drop_database, migrate, unique_name

LOG_IN = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }"
SIGN_UP = 'mutation($e: String!, $p: String!) { signUp(name: "burst", email: $e, password: $p) { token } }'


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


async def burst(url: str, email: str, password: str, count: int) -> Counter[str]:
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=count)) as http:
        body = {"query": LOG_IN, "variables": {"e": email, "p": password}}
        answers = await asyncio.gather(*(http.post("/graphql", json=body) for _ in range(count)))
    outcome: Counter[str] = Counter()
    for answer in answers:
        errors = answer.json().get("errors")
        outcome[f"{answer.status_code} {errors[0]['extensions']['code'] if errors else 'signed in'}"] += 1
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    name = unique_name("login_burst")
    url = create_database(name)
    try:
        env = {
            "DATABASE_URL": url,
            "REDIS_URL": SHARED_REDIS_URL,
            "CHANNEL_PREFIX": f"burst-{uuid.uuid4().hex[:8]}:",
            "RATE_LIMIT_AUTH": "100000/60",
            "RATE_LIMIT_LOGIN_ACCOUNT": "100000/300",
            **dict(item.split("=", 1) for item in args.env),
        }
        migrate(env)
        server = Server(env=env, workers=1).start()
        try:
            email, password = f"burst-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
            signed = httpx.post(
                f"{server.url}/graphql", json={"query": SIGN_UP, "variables": {"e": email, "p": password}}
            )
            assert signed.json()["data"]["signUp"]["token"], signed.text
            assert server.process is not None
            (pid,) = subprocess.run(
                ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True
            ).stdout.split()
            before = peak_rss_kib(int(pid))
            started = time.monotonic()
            outcome = asyncio.run(burst(server.url, email, password, args.burst))
            took = time.monotonic() - started
            after = peak_rss_kib(int(pid))
        finally:
            server.stop()
        print(
            f"{args.burst} concurrent logIns in {took:.1f} s: {dict(outcome)}; worker peak RSS "
            f"{before / 1024:.0f} MiB before the burst, {after / 1024:.0f} MiB after "
            f"(+{(after - before) / 1024:.0f} MiB)"
        )
    finally:
        drop_database(name)


if __name__ == "__main__":
    main()
