"""Rate limits stay correct through Redis blips (issue 24 follow-up): while Redis hangs (SIGSTOP:
nothing is refused, nothing answers, no connection drops), createMessage, a RATE_LIMIT_ACTIONS
mutation (editMessage) and logIn are answered, each within a generous bound, and their limits
still hold in each worker's memory: past twice the limit (two workers) requests are refused
with RATE_LIMITED. Once Redis answers again, the limit is shared by the workers again.

Against gunicorn with two workers and a redis-server of the test's own. Each request comes on a
connection of its own, so the kernel spreads them over both workers (how evenly does not matter:
the assertions hold for any spread)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.graphql import CREATE_MESSAGE, GraphQLClient, create_room, post_message, sign_up
from tests.support.processes import PrivateRedis, Server

LIMIT = 4  # per day: no window ends during the test
WORKERS = 2
SENT = 12  # past what the two workers' memories allow between them (8): some must be refused
ANSWER_SECONDS = 5.0  # generous: a request Redis held would never answer
EDIT = "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id body } }"
LOG_IN = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }"


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()  # resumed first, if the test left it paused


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def app(database_url: str, redis: PrivateRedis, prefix: str) -> Iterator[Server]:
    limit = f"{LIMIT}/86400"
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url,
        "CHANNEL_PREFIX": prefix,
        "RATE_LIMIT_MESSAGES": limit,
        "RATE_LIMIT_ACTIONS": limit,
        "RATE_LIMIT_AUTH": limit,
    }
    server = Server(env=env, workers=WORKERS).start()
    yield server
    server.stop()


def each_on_its_own_connection(
    app: Server, query: str, variables: dict[str, Any], token: str | None = None, address: str | None = None
) -> list[str]:
    """SENT requests, each on a new connection: the outcome of each ("ok" or its error code),
    every one answered within ANSWER_SECONDS."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if address is not None:
        headers["X-Forwarded-For"] = address  # believed from 127.0.0.1 (FORWARDED_ALLOW_IPS)
    outcomes = []
    for _ in range(SENT):
        started = time.monotonic()
        with httpx.Client(base_url=app.url, timeout=ANSWER_SECONDS) as http:
            body = http.post("/graphql", json={"query": query, "variables": variables}, headers=headers).json()
        assert time.monotonic() - started < ANSWER_SECONDS
        errors = body.get("errors")
        outcomes.append(errors[0]["extensions"]["code"] if errors else "ok")
    return outcomes


def limited_per_worker(outcomes: list[str]) -> None:
    """Nobody refused for Redis being away, and the limit held in each worker's memory."""
    assert set(outcomes) <= {"ok", "RATE_LIMITED"}, outcomes
    assert LIMIT <= outcomes.count("ok") <= LIMIT * WORKERS, outcomes


def test_limits_hold_per_worker_while_redis_hangs_and_are_shared_again_after(app: Server, redis: PrivateRedis) -> None:
    api = GraphQLClient(app.url)
    try:
        ann = sign_up(api, "Ann", headers={"X-Forwarded-For": "203.0.113.1"})
        room = create_room(api, ann)
        message = post_message(api, ann, room, "first")  # one of Ann's messages counted in Redis
    finally:
        api.close()
    redis.pause()
    try:
        limited_per_worker(each_on_its_own_connection(app, CREATE_MESSAGE, {"room": room, "body": "hi"}, ann.token))
        limited_per_worker(each_on_its_own_connection(app, EDIT, {"id": message["id"], "b": "edited"}, ann.token))
        log_in = {"e": ann.email, "p": ann.password}
        limited_per_worker(each_on_its_own_connection(app, LOG_IN, log_in, address="203.0.113.2"))
    finally:
        redis.resume()
    # One warning per worker when its breaker opened, not one per request (36 of them).
    assert 1 <= app.log().count("Redis failed (") <= WORKERS, app.log()[-3000:]

    # Once each worker's back-off is over, every hit is counted in Redis again: polled with a
    # fresh address each round until a whole round was, and then the limit is the shared one.
    prefix = app.env["CHANNEL_PREFIX"]
    deadline = time.monotonic() + 30
    for attempt in range(1000):
        assert time.monotonic() < deadline, "the limit never became shared again"
        address = f"198.51.100.{attempt + 1}"
        outcomes = each_on_its_own_connection(app, LOG_IN, log_in, address=address)
        counted = redis.cli("get", f"{prefix}rate:auth:{address}:{int(time.time() // 86400)}").strip()
        if counted == str(SENT):
            assert outcomes == ["ok"] * LIMIT + ["RATE_LIMITED"] * (SENT - LIMIT), outcomes
            break
    assert "Redis answers again" in app.log()
