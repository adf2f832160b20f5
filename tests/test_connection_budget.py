"""Every worker's pool together fits the plan's connection limit: under a role limited to six
connections, three workers serve 300 concurrent requests with none failing and no "too many
connections" anywhere; requests beyond the pool wait, or get SERVICE_UNAVAILABLE; idle
subscriptions hold no connection."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.graphql import CREATE_MESSAGE, GraphQLClient, create_room, post_many, sign_up
from tests.support.processes import (
    POSTGRES_ADMIN_URL,
    SHARED_REDIS_URL,
    PrivateRedis,
    Server,
    drop_database,
    migrate,
    unique_name,
)
from tests.support.wsclient import MESSAGE_CREATED, GraphQLWebSocket


def admin(sql: str, database: str = "postgres") -> str:
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    return subprocess.run(["psql", url, "-At", "-c", sql], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def limited_role() -> Iterator[tuple[str, str]]:
    """A role allowed six connections, owning a fresh database; (role, database URL)."""
    role, database = unique_name("chat_role"), unique_name("chat_budget")
    admin(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 6')
    admin(f'CREATE DATABASE "{database}" OWNER "{role}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://postgres@", f"postgres://{role}@") + f"/{database}"
    try:
        migrate({"DATABASE_URL": url})
        yield role, url
    finally:
        drop_database(database)
        admin(f'DROP ROLE IF EXISTS "{role}"')


def connections_of(role: str) -> int:
    return int(admin(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'").strip())


@pytest.fixture(scope="module")
def budgeted(limited_role: tuple[str, str]) -> Iterator[Server]:
    _, url = limited_role
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"t-{uuid.uuid4().hex[:8]}:",
        "DATABASE_CONNECTION_LIMIT": "6",
        "DATABASE_ACQUIRE_TIMEOUT": "30",
    }
    server = Server(env=env, workers=3).start()
    yield server
    server.stop()


def test_three_workers_serve_300_concurrent_requests_within_six_connections(
    budgeted: Server, limited_role: tuple[str, str]
) -> None:
    role, _ = limited_role
    api = GraphQLClient(budgeted.url)
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    peak = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, connections_of(role))

    sampler = threading.Thread(target=sample)
    sampler.start()

    async def load() -> list[dict]:
        headers = {"Authorization": f"Bearer {ann.token}"}
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=budgeted.url, headers=headers, timeout=60, limits=limits) as http:

            async def one(i: int) -> dict:
                if i % 3 == 0:
                    payload = {"query": CREATE_MESSAGE, "variables": {"room": room, "body": f"load {i}"}}
                else:
                    payload = {"query": "{ me { name } rooms(first: 10) { id members(first: 10) { id } } }"}
                return (await http.post("/graphql", json=payload)).json()

            return await asyncio.gather(*(one(i) for i in range(300)))

    try:
        results = asyncio.run(load())
    finally:
        sampling.set()
        sampler.join()
    failures = [result for result in results if "errors" in result]
    assert failures == []
    assert len(results) == 300
    assert peak <= 6
    assert "too many connections" not in budgeted.log()
    print(f"peak connections of the role during the load: {peak} (limit 6, pool {(6 - 3) // 3} per worker)")


async def test_idle_subscriptions_hold_no_connection(budgeted: Server, limited_role: tuple[str, str]) -> None:
    role, _ = limited_role
    api = GraphQLClient(budgeted.url)
    ann = sign_up(api, "Ann")
    room = create_room(api, ann)
    subscribers = [await GraphQLWebSocket.open(budgeted.ws_url, "graphql-transport-ws", ann.token) for _ in range(20)]
    for subscriber in subscribers:
        await subscriber.subscribe("s", MESSAGE_CREATED, {"room": room})
        await subscriber.barrier()  # started: whatever a subscription holds, it holds now
    assert connections_of(role) <= 3  # one pool connection per worker, whatever the subscriptions
    assert api.data("{ me { name } }", token=ann.token) == {"me": {"name": "Ann"}}  # the pool is free
    for subscriber in subscribers:
        await subscriber.close()


def test_a_budget_too_small_for_the_workers_stops_the_server_at_start_up(limited_role: tuple[str, str]) -> None:
    _, url = limited_role
    env = {"DATABASE_URL": url, "REDIS_URL": SHARED_REDIS_URL, "DATABASE_CONNECTION_LIMIT": "4"}
    server = Server(env=env, workers=3)
    with pytest.raises(RuntimeError, match="server exited"):
        server.start(timeout=20)
    assert "DATABASE_CONNECTION_LIMIT=4" in server.log()
    assert "cannot give one connection to each of 3 workers" in server.log()


def test_requests_beyond_the_pool_wait_then_get_service_unavailable(limited_role: tuple[str, str]) -> None:
    _, url = limited_role
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"t-{uuid.uuid4().hex[:8]}:",
        "DATABASE_POOL_MAX": "1",
        "DATABASE_ACQUIRE_TIMEOUT": "0.01",
    }
    server = Server(env=env, workers=1).start()
    try:
        api = GraphQLClient(server.url)
        ann = sign_up(api, "Ann")
        for i in range(5):
            create_room(api, ann, f"room {i}")

        async def burst() -> list[httpx.Response]:
            headers = {"Authorization": f"Bearer {ann.token}"}
            query = (
                "{ rooms(first: 10) { members(first: 10) { name } messages(first: 10) { edges { node { body } } } } }"
            )
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
                return await asyncio.gather(*(http.post("/graphql", json={"query": query}) for _ in range(100)))

        responses = asyncio.run(burst())
        codes = [error["extensions"]["code"] for response in responses for error in response.json().get("errors", [])]
        assert "SERVICE_UNAVAILABLE" in codes
        assert set(codes) == {"SERVICE_UNAVAILABLE"}  # nothing else went wrong
        assert any("errors" not in response.json() for response in responses)
        assert {response.status_code for response in responses} <= {200, 503}
        assert api.data("{ me { name } }", token=ann.token) == {"me": {"name": "Ann"}}  # still serving
    finally:
        server.stop()


async def test_redis_connections_stay_within_the_plans_limit_under_a_burst(database_url: str) -> None:
    """Redis's limit is shared the same way as Postgres's: two workers under
    REDIS_CONNECTION_LIMIT=12 (and the reserve of 2) keep five each, the pub/sub connection among them. 200
    messages posted 100 at a time all go through, every one reaches a subscriber live, and Redis
    never sees more than the budget. Without the bound one worker held 53 connections at 50
    requests at once."""
    redis = PrivateRedis().start()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url,
        "REDIS_CONNECTION_LIMIT": "12",
        "RATE_LIMIT_MESSAGES": "100000/1",
    }
    server = Server(env=env, workers=2).start()
    try:
        api = GraphQLClient(server.url)
        ann = sign_up(api, "Ann")
        room = create_room(api, ann)
        subscriber = await GraphQLWebSocket.open(server.ws_url, "graphql-transport-ws", ann.token)
        await subscriber.subscribe("s", MESSAGE_CREATED, {"room": room})
        await subscriber.barrier()
        peak = 0
        sampling = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not sampling.is_set():
                peak = max(peak, redis.connected_clients() - 1)  # not redis-cli's own
                await asyncio.sleep(0.01)

        sampler = asyncio.ensure_future(sample())
        try:
            posted = await post_many(server.url, ann.token, room, [f"burst {i}" for i in range(200)], concurrency=100)
        finally:
            sampling.set()
            await sampler
        assert len(posted) == 200  # each acknowledged (post_many fails on an error)
        bodies = set()
        while len(bodies) < 200:
            payload = await subscriber.result("s", timeout=10)
            bodies.add(payload["data"]["messageCreated"]["body"])
        assert bodies == {f"burst {i}" for i in range(200)}
        assert 0 < peak <= 10, peak
        await subscriber.close()
    finally:
        server.stop()
        redis.stop()


def test_a_redis_budget_too_small_for_the_workers_stops_the_server_at_start_up(database_url: str) -> None:
    redis = PrivateRedis().start()
    try:
        env = {"DATABASE_URL": database_url, "REDIS_URL": redis.url, "REDIS_CONNECTION_LIMIT": "6"}
        server = Server(env=env, workers=3)
        with pytest.raises(RuntimeError, match="server exited"):
            server.start(timeout=20)
        assert "REDIS_CONNECTION_LIMIT=6" in server.log()
        assert "cannot give 2 connections to each of 3 workers" in server.log()
    finally:
        redis.stop()
