"""Revocation heartbeats cost Redis in proportion to the number of worker processes, not its
square: each process hears only its own beat, on a channel of its own, so one PUBLISH is one
delivery. Measured on a Redis of the test's own, against idle gunicorn servers of 1, 4 and 8
workers (`-s` prints the figures). Also: the beat channels come back after Redis drops the
pub/sub connections, and the lease still works in-process without Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis import asyncio as aioredis

from tests.support.graphql import GraphQLClient, sign_up
from tests.support.processes import PrivateRedis, Server
from tests.test_viewer_cache import LOG_OUT, KeepAlive, close_all, on_each_worker, served_from_memory

SAMPLE_SECONDS = 2.5
# The beat is sent every 0.1 s at most; a worker costs at most that many, plus slack.
PER_WORKER = 12.0
CONSTANT = 5.0


@dataclass
class Traffic:
    workers: int
    publishes: float  # PUBLISH commands per second (INFO commandstats)
    deliveries: float  # messages Redis wrote to subscribers per second
    by_channel: dict[str, tuple[int, int]]  # channel -> (messages published in the sample, subscribers)


@pytest.fixture(scope="module")
def redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


async def until_listening(client: aioredis.Redis, channel_prefix: str, workers: int) -> None:
    """Every worker has subscribed to revocations and to its own beat channel."""
    deadline = time.monotonic() + 60
    while True:
        [(_, listening)] = await client.pubsub_numsub(f"{channel_prefix}revocations")
        beats = await client.pubsub_channels(f"{channel_prefix}revocations:beat:*")
        if listening == workers and len(beats) == workers:
            return
        assert time.monotonic() < deadline, (listening, beats)
        await asyncio.sleep(0.1)


async def publish_calls(client: aioredis.Redis) -> int:
    return int((await client.info("commandstats")).get("cmdstat_publish", {}).get("calls", 0))


async def measure(client: aioredis.Redis, channel_prefix: str, workers: int) -> Traffic:
    """Counts every message published under the prefix through a pattern subscription (which
    PUBSUB NUMSUB leaves out), and multiplies by each channel's subscribers."""
    published: Counter[str] = Counter()
    observer = client.pubsub()
    await observer.psubscribe(f"{channel_prefix}*")
    while (confirmation := await observer.get_message(timeout=5)) is None or confirmation["type"] != "psubscribe":
        assert confirmation is not None, "no psubscribe confirmation"
    calls_before, started = await publish_calls(client), time.monotonic()
    while (left := started + SAMPLE_SECONDS - time.monotonic()) > 0:
        message = await observer.get_message(timeout=left)
        if message is not None and message["type"] == "pmessage":
            published[message["channel"].decode()] += 1
    elapsed = time.monotonic() - started
    calls = await publish_calls(client) - calls_before
    await observer.aclose()
    subscribers = dict(await client.pubsub_numsub(*published)) if published else {}
    by_channel = {channel: (count, subscribers[channel.encode()]) for channel, count in published.items()}
    deliveries = sum(count * listening for count, listening in by_channel.values())
    return Traffic(workers, calls / elapsed, deliveries / elapsed, by_channel)


async def test_heartbeat_traffic_grows_linearly_with_workers(database_url: str, redis: PrivateRedis) -> None:
    client = aioredis.Redis.from_url(redis.url)
    measured: list[Traffic] = []
    try:
        for workers in (1, 4, 8):
            channel_prefix = prefix()
            env = {"DATABASE_URL": database_url, "REDIS_URL": redis.url, "CHANNEL_PREFIX": channel_prefix}
            server = Server(env=env, workers=workers).start()
            try:
                await until_listening(client, channel_prefix, workers)
                traffic = await measure(client, channel_prefix, workers)
            finally:
                server.stop()
            measured.append(traffic)
            print(
                f"\n{workers} workers: {traffic.publishes:.1f} PUBLISH/s, {traffic.deliveries:.1f} deliveries/s "
                f"({traffic.deliveries / workers:.1f} per worker) on {len(traffic.by_channel)} channels"
            )
            assert traffic.deliveries <= PER_WORKER * workers + CONSTANT, traffic
            assert traffic.publishes <= PER_WORKER * workers + CONSTANT, traffic
            beats = {
                channel: counts
                for channel, counts in traffic.by_channel.items()
                if channel.startswith(f"{channel_prefix}revocations:beat:")
            }
            # Every worker beat during the sample, and each beat reached one subscriber: itself.
            assert len(beats) == workers and all(count > 0 and listening == 1 for count, listening in beats.values())
    finally:
        await client.aclose()


@pytest.fixture
def app(database_url: str, redis: PrivateRedis) -> Iterator[Server]:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis.url, "CHANNEL_PREFIX": prefix()}
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


async def test_after_redis_drops_the_pubsub_connections_beats_and_revocations_resume(
    app: Server, redis: PrivateRedis
) -> None:
    account = sign_up(GraphQLClient(app.url), "Dropped")
    connections: dict[int, list[KeepAlive]] = {}
    try:
        connections = await on_each_worker(app, per_worker=1)
        for held in connections.values():
            await served_from_memory(held[0], account)
        redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
        # What was announced while a worker was away is lost to it: it starts again empty, and
        # trusts its memory again once its own beat comes back on the new connection.
        deadline = time.monotonic() + 10
        for held in connections.values():
            while (cache := await held[0].cache())["entries"] or not cache["live"]:
                assert time.monotonic() < deadline, cache
                await asyncio.sleep(0.05)
            await served_from_memory(held[0], account)
        first = next(iter(connections.values()))[0]
        assert (await first.graphql(LOG_OUT, account.token)) == {"data": {"logOut": True}}
        for held in connections.values():
            assert await held[0].me(account.token) is None
    finally:
        close_all(connections)


async def test_without_redis_the_worker_renews_its_own_lease(sqlite_server: Server) -> None:
    account = sign_up(GraphQLClient(sqlite_server.url), "Alone")
    connection = await KeepAlive.open(sqlite_server.port)
    try:
        connection.worker = (await connection.request("GET", "/healthz"))[1]["worker"]
        await served_from_memory(connection, account)
        assert (await connection.graphql(LOG_OUT, account.token)) == {"data": {"logOut": True}}
        assert await connection.me(account.token) is None
    finally:
        connection.close()
