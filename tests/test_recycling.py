"""Worker recycling and SIGTERM under a pooled keep-alive client, the way Heroku's Router 2.0
reuses its connections to a dyno: a stopping worker answers every request it was sent, on a
kept-alive connection with `Connection: close`, and never closes one under a request."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.support.graphql import GraphQLClient, create_room, sign_up
from tests.support.processes import SHARED_REDIS_URL, Server
from tests.support.waiting import until

ROOMS = {"query": "{ rooms { id } }"}
POOL = httpx.Limits(max_connections=20, max_keepalive_connections=20)
REQUESTS = 1200
RECYCLED = re.compile(r"\[(\d+)\] \[INFO\] Maximum request limit of \d+")


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        **extra,
    }


@dataclass
class Tally:
    """What became of each request: an HTTP answer, a refused connect (nothing was sent), or a
    failure (the request was written and the connection dropped under it)."""

    expected: dict
    statuses: Counter[int] = field(default_factory=Counter)
    wrong_bodies: list[str] = field(default_factory=list)
    refused: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    async def send(self, http: httpx.AsyncClient) -> httpx.Response | None:
        try:
            response = await http.post("/graphql", json=ROOMS)
        except httpx.ConnectError:
            self.refused += 1
            return None
        except httpx.TransportError as error:
            self.failures[type(error).__name__] += 1
            return None
        self.statuses[response.status_code] += 1
        if response.status_code == 200 and response.json() != self.expected:
            self.wrong_bodies.append(response.text)
        return response


def signed_in_with_a_room(url: str) -> tuple[str, dict]:
    api = GraphQLClient(url)
    try:
        ann = sign_up(api, "Ann")
        room = create_room(api, ann)
    finally:
        api.close()
    return ann.token, {"data": {"rooms": [{"id": room}]}}


async def test_recycling_under_pooled_keep_alive_load_drops_no_request(database_url: str) -> None:
    server = Server(env=server_env(database_url, MAX_REQUESTS="50", MAX_REQUESTS_JITTER="25"), workers=2).start()
    token, expected = signed_in_with_a_room(server.url)
    tally = Tally(expected)
    remaining = REQUESTS

    async def client_task(http: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await tally.send(http)

    headers = {"authorization": f"Bearer {token}"}
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=POOL, timeout=30) as http:
            await asyncio.gather(*(client_task(http) for _ in range(20)))
    finally:
        server.stop()
    took = time.monotonic() - started
    recycles = [m.group(1) for line in server.log().splitlines() if (m := RECYCLED.search(line))]
    print(
        f"{REQUESTS} requests in {took:.1f} s, {len(recycles)} recycles; {dict(tally.statuses)}, {dict(tally.failures)}"
    )
    assert len(recycles) >= 10
    assert len(set(recycles)) == len(recycles)  # each a different worker process
    assert tally.failures == Counter()
    assert tally.refused == 0  # the master keeps the socket listening: a recycle refuses nothing
    assert tally.statuses == Counter({200: REQUESTS})
    assert tally.wrong_bodies == []


async def test_sigterm_under_pooled_keep_alive_load_answers_every_request_sent(database_url: str) -> None:
    server = Server(env=server_env(database_url), workers=2).start()
    assert server.process is not None
    token, expected = signed_in_with_a_room(server.url)
    tally = Tally(expected)
    headers = {"authorization": f"Bearer {token}"}
    sigterm_at: float | None = None
    after_sigterm: Counter[str] = Counter()

    async def client_task(http: httpx.AsyncClient) -> None:
        """Requests back to back until a connect is refused: the server has stopped listening."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            sent_at = time.monotonic()
            response = await tally.send(http)
            if response is None:
                return
            if sigterm_at is not None and sent_at > sigterm_at:
                after_sigterm[response.headers.get("connection", "keep-alive")] += 1

    async with (
        httpx.AsyncClient(base_url=server.url, headers=headers, limits=POOL, timeout=30) as http,
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as idle,
    ):
        load = asyncio.gather(*(client_task(http) for _ in range(20)))
        await until(lambda: tally.statuses.total() >= 40, "the load under way")
        # A connection the router keeps open and idle across the SIGTERM, then reuses.
        before = await idle.post("/graphql", json=ROOMS)
        assert before.status_code == 200
        assert before.headers.get("connection") != "close"
        logged = len(server.log())
        sigterm_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # Both workers draining now (uvicorn logs it as it stops listening).
        await until(lambda: server.log()[logged:].count("Shutting down") >= 2, "both workers draining")
        try:
            reused: httpx.Response | str = await idle.post("/graphql", json=ROOMS)
        except httpx.TransportError as error:
            reused = repr(error)
        await load
    exit_code = server.process.wait(30)
    took = time.monotonic() - sigterm_at
    print(
        f"stopped {took:.2f} s after SIGTERM; {dict(tally.statuses)}, refused at connect {tally.refused}, "
        f"failures {dict(tally.failures)}; answers to requests sent after SIGTERM: {dict(after_sigterm)}"
    )
    assert isinstance(reused, httpx.Response), reused
    assert reused.extensions["network_stream"] is before.extensions["network_stream"]  # the same connection
    assert reused.status_code == 200
    assert reused.json() == expected
    assert reused.headers["connection"] == "close"
    assert tally.failures == Counter()
    assert set(tally.statuses) == {200}
    assert tally.wrong_bodies == []
    assert after_sigterm["close"] > 0
    assert exit_code == 0
    assert took < 20  # GRACEFUL_TIMEOUT, under Heroku's 30 s
