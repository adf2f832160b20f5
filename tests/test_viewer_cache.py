"""Each worker remembers which user a token belongs to, so a request needs no Postgres read to
know its viewer; a logOut still ends the token at once on every worker. When logOut returns, no
worker accepts the token: not one that served it a moment before, not one serving it while the
logOut ran. While Redis hangs, workers stop trusting what they remember, and a logOut still takes
effect on every worker (its announcement is retried: tests/test_revocation_outage.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from identity.viewer_cache import ViewerCache
from tests.support.graphql import Account, GraphQLClient, sign_up
from tests.support.processes import SHARED_REDIS_URL, PrivateRedis, Server
from tests.support.sockets import unread_by_server
from tests.support.waiting import until
from tests.support.wsclient import connection_owners, worker_pids

ME = "{ me { id } }"
LOG_OUT = "mutation { logOut }"


class KeepAlive:
    """One HTTP/1.1 keep-alive connection, so a test knows which worker answers it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port
        self.local_port: int = writer.get_extra_info("sockname")[1]
        self.worker = 0

    @classmethod
    async def open(cls, port: int) -> KeepAlive:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port)

    async def request(self, method: str, path: str, body: bytes = b"", token: str | None = None) -> tuple[int, dict]:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        async with asyncio.timeout(15):
            response = await self.reader.readuntil(b"\r\n\r\n")
            length = int(response.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            payload = await self.reader.readexactly(length)
        return int(response.split(b" ", 2)[1]), orjson.loads(payload)

    async def graphql(self, query: str, token: str | None) -> dict:
        return (await self.request("POST", "/graphql", orjson.dumps({"query": query}), token))[1]

    async def me(self, token: str) -> str | None:
        body = await self.graphql(ME, token)
        assert "errors" not in body, body
        return body["data"]["me"] and body["data"]["me"]["id"]

    async def cache(self) -> dict:
        status, body = await self.request("GET", "/healthz")
        assert status == 200 and body["worker"] == self.worker, body
        return body["viewer_cache"]

    def close(self) -> None:
        self.writer.close()


async def on_each_worker(server: Server, per_worker: int) -> dict[int, list[KeepAlive]]:
    """`per_worker` connections held by each worker, as the kernel's socket table says."""
    assert server.process is not None
    workers = worker_pids(server.process.pid)
    found: dict[int, list[KeepAlive]] = {worker: [] for worker in workers}
    for _ in range(200):
        if all(len(held) >= per_worker for held in found.values()):
            return found
        connection = await KeepAlive.open(server.port)
        await connection.request("GET", "/healthz")  # accepted and answered: its owner is known
        connection.worker = connection_owners(server.port)[connection.local_port]
        if len(found[connection.worker]) < per_worker:
            found[connection.worker].append(connection)
        else:
            connection.close()
    raise AssertionError(f"could not reach every worker: {found}")


def close_all(connections: dict[int, list[KeepAlive]]) -> None:
    for held in connections.values():
        for connection in held:
            connection.close()


@pytest.fixture(scope="module")
def app(database_url: str) -> Iterator[Server]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    env = {"DATABASE_URL": database_url, "REDIS_URL": SHARED_REDIS_URL, "CHANNEL_PREFIX": prefix}
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


async def served_from_memory(connection: KeepAlive, account: Account) -> None:
    """The worker answers `me` for the token without reading Postgres: a hit, not a miss."""
    assert await connection.me(account.token) == account.id  # remembered, if it was not yet
    before = await connection.cache()
    assert await connection.me(account.token) == account.id
    after = await connection.cache()
    assert before["live"] and after["live"], after
    assert (after["hits"], after["misses"]) == (before["hits"] + 1, before["misses"]), (before, after)


@pytest.mark.parametrize("logging_out_on", [0, 1])
async def test_every_worker_refuses_a_remembered_token_once_log_out_returns(app: Server, logging_out_on: int) -> None:
    account = sign_up(GraphQLClient(app.url), "Remembered")
    connections = await on_each_worker(app, per_worker=3)
    try:
        for held in connections.values():
            await served_from_memory(held[0], account)
        workers = sorted(connections)
        logging_out = connections[workers[logging_out_on]][0]
        assert (await logging_out.graphql(LOG_OUT, account.token)) == {"data": {"logOut": True}}
        everyone = [connection for held in connections.values() for connection in held]
        assert await asyncio.gather(*(connection.me(account.token) for connection in everyone)) == [None] * 6
        refused = await logging_out.graphql(LOG_OUT, account.token)
        assert [error["extensions"]["code"] for error in refused["errors"]] == ["UNAUTHENTICATED"]
    finally:
        close_all(connections)


async def test_requests_racing_a_log_out_are_refused_from_the_moment_it_returns(app: Server) -> None:
    account = sign_up(GraphQLClient(app.url), "Racing")
    connections = await on_each_worker(app, per_worker=4)
    answers: list[tuple[int, float, str | None]] = []  # worker, when the request was sent, me.id
    stop = asyncio.Event()

    async def hammer(connection: KeepAlive) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            answers.append((connection.worker, sent, await connection.me(account.token)))

    try:
        tasks = [asyncio.create_task(hammer(c)) for held in connections.values() for c in held]
        await until(  # every worker has served the token (what the assertions below need)
            lambda: all(
                sum(1 for w, _, me in list(answers) if w == worker and me == account.id) > 10 for worker in connections
            ),
            "every worker serving the token",
        )
        logging_out = await KeepAlive.open(app.port)
        assert (await logging_out.graphql(LOG_OUT, account.token)) == {"data": {"logOut": True}}
        returned = time.monotonic()
        logging_out.close()
        await until(  # requests sent after the logOut returned answered by every worker
            lambda: all(
                sum(1 for w, sent, _ in list(answers) if w == worker and sent >= returned) >= 5
                for worker in connections
            ),
            "answers after the logOut from every worker",
        )
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        close_all(connections)
    for worker in connections:
        before = [me for w, sent, me in answers if w == worker and sent < returned]
        after = [me for w, sent, me in answers if w == worker and sent >= returned]
        assert before.count(account.id) > 10, f"worker {worker} never served the token before the logOut"
        assert after and after == [None] * len(after), f"worker {worker} accepted a revoked token"


async def test_a_worker_stalled_through_a_log_out_does_not_trust_its_memory_when_it_wakes(app: Server) -> None:
    """A worker that is paused (a long GC, a starved CPU) cannot have heard the revocation in
    time; its lease ran out while it was paused."""
    account = sign_up(GraphQLClient(app.url), "Stalled")
    connections = await on_each_worker(app, per_worker=1)
    try:
        for held in connections.values():
            await served_from_memory(held[0], account)
        (awake,), (stalled,) = connections.values()
        os.kill(stalled.worker, signal.SIGSTOP)
        try:
            assert (await awake.graphql(LOG_OUT, account.token)) == {"data": {"logOut": True}}
            waiting = asyncio.create_task(stalled.me(account.token))  # in its socket when it wakes
            await until(lambda: unread_by_server(app.port) > 0, "the request waiting in the stalled worker's socket")
        finally:
            os.kill(stalled.worker, signal.SIGCONT)
        assert await waiting is None
    finally:
        close_all(connections)


@pytest.fixture
def hung_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis().start()
    yield redis
    assert redis.process is not None
    os.kill(redis.process.pid, signal.SIGCONT)
    redis.stop()


async def caches(connections: dict[int, list[KeepAlive]]) -> list[dict]:
    return [await held[0].cache() for held in connections.values()]


async def until_live_is(connections: dict[int, list[KeepAlive]], live: bool) -> None:
    deadline = time.monotonic() + 10
    while not all(cache["live"] is live for cache in await caches(connections)):
        assert time.monotonic() < deadline, await caches(connections)
        await asyncio.sleep(0.1)


async def test_while_redis_hangs_nothing_is_trusted_from_memory_and_log_out_still_takes_effect(
    database_url: str, hung_redis: PrivateRedis
) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": hung_redis.url, "CHANNEL_PREFIX": "test-hung:"}
    server = Server(env=env, workers=2).start()
    connections: dict[int, list[KeepAlive]] = {}
    try:
        account = sign_up(GraphQLClient(server.url), "Hung")
        connections = await on_each_worker(server, per_worker=1)
        for held in connections.values():
            await served_from_memory(held[0], account)
        assert hung_redis.process is not None
        os.kill(hung_redis.process.pid, signal.SIGSTOP)  # no reset, no error: its sockets go quiet
        await until_live_is(connections, False)
        for held in connections.values():
            before = await held[0].cache()
            assert await held[0].me(account.token) == account.id
            after = await held[0].cache()
            assert (after["hits"], after["misses"]) == (before["hits"], before["misses"] + 1)  # read from Postgres
        first = next(iter(connections.values()))[0]
        # Postgres is the record: the logOut is answered, and no worker accepts the token.
        assert (await first.graphql(LOG_OUT, account.token)) == {"data": {"logOut": True}}
        for held in connections.values():
            assert await held[0].me(account.token) is None

        os.kill(hung_redis.process.pid, signal.SIGCONT)
        await until_live_is(connections, True)  # trusting memory again, and still refusing it
        other = sign_up(GraphQLClient(server.url), "Other")
        for held in connections.values():
            assert await held[0].me(account.token) is None
            await served_from_memory(held[0], other)
            assert await held[0].me(account.token) is None
    finally:
        close_all(connections)
        server.stop()


def test_a_lookup_that_read_the_database_before_a_revocation_is_not_remembered() -> None:
    cache = ViewerCache()
    cache.renew(time.monotonic() + 60)
    viewer = object()
    epoch = cache.epoch  # a lookup starts reading the token from the database ...
    cache.revoke("digest")  # ... the token is revoked while it reads ...
    cache.put("digest", viewer, epoch)  # type: ignore[arg-type]  # ... and what it read is stale
    assert cache.get("digest") is None and len(cache) == 0
    cache.put("digest", viewer, cache.epoch)  # type: ignore[arg-type]
    assert cache.get("digest") is viewer


def test_without_a_live_lease_nothing_is_remembered_or_trusted() -> None:
    cache = ViewerCache()
    cache.put("digest", object(), cache.epoch)  # type: ignore[arg-type]
    assert len(cache) == 0
    cache.renew(time.monotonic() + 60)
    cache.put("digest", object(), cache.epoch)  # type: ignore[arg-type]
    assert len(cache) == 1
    cache.lapse()
    assert cache.get("digest") is None and len(cache) == 0
