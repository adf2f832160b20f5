"""A revocation takes effect even while Redis cannot take its announcement (issue 24): logOut,
logOut(everywhere: true) and changePassword answer (not 503), every worker refuses the token as
soon as they do, the worker that served them ends the token's live subscriptions at once, the
announcement gets through on a retry once Redis is back (seen by a subscriber of the
revocations channel on Redis itself), and the other worker's subscriptions end then.

Against gunicorn with two workers and a Redis of the test's own, reached through a proxy: the
test either pauses Redis (SIGSTOP: nothing is refused, nothing answers, no connection drops) or
cuts the proxy (every worker's connections drop and new ones are refused), while its own
observer stays connected to Redis directly. The in-process tests below cover the queue of
announcements waiting for Redis: coalesced, bounded, and tried once more on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis import asyncio as aioredis

from core.redis_backend import RESYNC
from identity import revocations as module
from identity.auth import token_digest
from identity.revocations import Revocations
from identity.viewer_cache import ViewerCache
from tests.support.graphql import Account, GraphQLClient, create_room, post_message, sign_up
from tests.support.processes import PrivateRedis, Server, free_port
from tests.support.tcpproxy import TCPProxy
from tests.support.wsclient import MESSAGE_CREATED, TRANSPORT_WS, GraphQLWebSocket, open_on_worker, worker_pids
from tests.test_viewer_cache import KeepAlive, close_all, on_each_worker, served_from_memory

LOG_OUT = "mutation { logOut }"
LOG_OUT_EVERYWHERE = "mutation { logOut(everywhere: true) }"
LOG_IN = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }"
CHANGE = 'mutation { changePassword(current: "correct horse battery", new: "a much better passphrase") { token } }'
RETRIED = "announced on a retry"


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()  # resumed first, if a test paused it


@pytest.fixture
def proxy(redis: PrivateRedis) -> Iterator[TCPProxy]:
    forwarder = TCPProxy(redis.port).start()
    yield forwarder
    forwarder.stop()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def app(database_url: str, proxy: TCPProxy, prefix: str) -> Iterator[Server]:
    env = {"DATABASE_URL": database_url, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}", "CHANNEL_PREFIX": prefix}
    server = Server(env=env, workers=2).start()
    yield server
    server.stop()


class Observer:
    """A subscriber of the revocations channel on Redis itself, not through the proxy."""

    def __init__(self, redis: PrivateRedis, channel: str) -> None:
        self.client = aioredis.Redis.from_url(redis.url)
        self.pubsub = self.client.pubsub()
        self.channel = channel

    async def start(self) -> Observer:
        await self.pubsub.subscribe(self.channel)
        while (confirmation := await self.pubsub.get_message(timeout=5)) is None or confirmation["type"] != "subscribe":
            assert confirmation is not None, "no subscribe confirmation"
        return self

    async def hears(self, expected: str, timeout: float = 20.0) -> None:
        """A `revoke-user <id>` equal to `expected`, or a `revoke ...` naming its digest."""
        deadline = time.monotonic() + timeout
        heard = []
        while (left := deadline - time.monotonic()) > 0:
            message = await self.pubsub.get_message(timeout=min(left, 1.0))
            if message is None or message["type"] != "message":
                continue
            text = message["data"].decode()
            heard.append(text)
            if text == expected or (expected.startswith("revoke ") and expected.split()[1] in text.split()[1:]):
                return
        raise AssertionError(f"never announced: {expected}; heard {heard}")

    async def close(self) -> None:
        await self.pubsub.aclose()
        await self.client.aclose()


@asynccontextmanager
async def observing(redis: PrivateRedis, prefix: str) -> AsyncIterator[Observer]:
    observer = await Observer(redis, f"{prefix}revocations").start()
    try:
        yield observer
    finally:
        await observer.close()


async def live_on_each_worker(app: Server, account: Account, token: str, room: str) -> dict[int, GraphQLWebSocket]:
    """A messageCreated subscription with `token` on each worker, seen delivering."""
    assert app.process is not None
    sockets = {}
    for worker in sorted(app_workers(app)):
        ws = await open_on_worker(app.ws_url, app.port, app.process.pid, worker, TRANSPORT_WS, token)
        await ws.subscribe("1", MESSAGE_CREATED, {"room": room})
        sockets[worker] = ws
    api = GraphQLClient(app.url)
    try:
        # Subscribed once a message posted now reaches every socket (polled, with a deadline).
        deadline = time.monotonic() + 20
        pending = dict(sockets)
        while pending:
            assert time.monotonic() < deadline, "a subscription never started"
            post_message(api, account, room, "ping")
            for worker, ws in list(pending.items()):
                try:
                    payload = await ws.result("1", timeout=0.5)
                except TimeoutError:
                    continue
                assert payload["data"]["messageCreated"]["body"] == "ping", payload
                del pending[worker]
        for ws in sockets.values():  # pings posted before a socket's start was seen
            while True:
                try:
                    await ws.result("1", timeout=0.3)
                except TimeoutError:
                    break
    finally:
        api.close()
    return sockets


def app_workers(app: Server) -> list[int]:
    assert app.process is not None
    return worker_pids(app.process.pid)


async def ended(ws: GraphQLWebSocket, timeout: float) -> None:
    """The subscription ends as a logOut ends it: an UNAUTHENTICATED result, then complete."""
    payload = await ws.result("1", timeout)
    assert [error["extensions"]["code"] for error in payload["errors"]] == ["UNAUTHENTICATED"], payload
    assert await ws.receive(timeout) == {"type": "complete", "id": "1"}


async def logged(app: Server, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in app.log():
        assert time.monotonic() < deadline, f"{text!r} never logged"
        await asyncio.sleep(0.1)


async def setup(app: Server) -> tuple[Account, str, dict[int, list[KeepAlive]]]:
    api = GraphQLClient(app.url)
    try:
        ann = sign_up(api, "Ann")
        room = create_room(api, ann)
    finally:
        api.close()
    connections = await on_each_worker(app, per_worker=1)
    for held in connections.values():
        await served_from_memory(held[0], ann)  # every worker trusts its memory for the token
    return ann, room, connections


async def test_log_out_while_redis_hangs_answers_and_the_retry_ends_it_on_the_other_worker(
    app: Server, redis: PrivateRedis, prefix: str
) -> None:
    ann, room, connections = await setup(app)
    sockets = await live_on_each_worker(app, ann, ann.token, room)
    here, there = sorted(connections)
    try:
        async with observing(redis, prefix) as observer:
            redis.pause()  # no reset, no error: its sockets go quiet
            started = time.monotonic()
            answer = await connections[here][0].graphql(LOG_OUT, ann.token)
            assert answer == {"data": {"logOut": True}}
            assert time.monotonic() - started < 10
            for held in connections.values():  # refused at once, on every worker
                assert await held[0].me(ann.token) is None
            await ended(sockets[here], timeout=5)  # this worker ended it without Redis
            redis.resume()
            # Nothing dropped a connection, so no resync: the retried announcement ends it there.
            await ended(sockets[there], timeout=20)
            await observer.hears(f"revoke {token_digest(ann.token)}")
            await logged(app, RETRIED)
            for held in connections.values():
                assert await held[0].me(ann.token) is None
    finally:
        for ws in sockets.values():
            await ws.close()
        close_all(connections)


async def test_change_password_while_redis_is_unreachable(
    app: Server, redis: PrivateRedis, proxy: TCPProxy, prefix: str
) -> None:
    ann, room, connections = await setup(app)
    sockets = await live_on_each_worker(app, ann, ann.token, room)
    here, there = sorted(connections)
    try:
        async with observing(redis, prefix) as observer:
            proxy.switch(free_port())  # every worker's connections to Redis drop; new ones fail
            answer = await connections[here][0].graphql(CHANGE, ann.token)
            assert "errors" not in answer, answer
            fresh = answer["data"]["changePassword"]["token"]
            for held in connections.values():
                assert await held[0].me(ann.token) is None
                assert await held[0].me(fresh) == ann.id
            await ended(sockets[here], timeout=5)
            proxy.switch(redis.port)
            await ended(sockets[there], timeout=20)  # the resync's re-check, or the retry
            await observer.hears(f"revoke-user {int(ann.id)}")
            await logged(app, RETRIED)
            for held in connections.values():
                assert await held[0].me(ann.token) is None
    finally:
        for ws in sockets.values():
            await ws.close()
        close_all(connections)


async def test_log_out_everywhere_while_redis_is_unreachable(
    app: Server, redis: PrivateRedis, proxy: TCPProxy, prefix: str
) -> None:
    ann, room, connections = await setup(app)
    api = GraphQLClient(app.url)
    try:
        phone = api.data(LOG_IN, {"e": ann.email, "p": ann.password})["logIn"]["token"]
    finally:
        api.close()
    sockets = await live_on_each_worker(app, ann, ann.token, room)
    here, there = sorted(connections)
    try:
        async with observing(redis, prefix) as observer:
            proxy.switch(free_port())
            answer = await connections[here][0].graphql(LOG_OUT_EVERYWHERE, phone)
            assert answer == {"data": {"logOut": True}}
            for held in connections.values():
                assert await held[0].me(ann.token) is None
                assert await held[0].me(phone) is None
            await ended(sockets[here], timeout=5)  # another token of the user, ended here at once
            proxy.switch(redis.port)
            await ended(sockets[there], timeout=20)
            await observer.hears(f"revoke-user {int(ann.id)}")
            await logged(app, RETRIED)
    finally:
        for ws in sockets.values():
            await ws.close()
        close_all(connections)


# In-process: the queue of announcements that wait for Redis.


class Never:
    def __aiter__(self) -> Never:
        return self

    async def __anext__(self) -> Any:
        await asyncio.get_running_loop().create_future()


class FlakyBroadcast:
    """A broadcast whose publish fails (`down`) or hangs (`hung`) until told otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.hung = False
        self.published: list[str] = []

    async def publish(self, channel: str, message: str) -> None:
        if self.hung:
            await asyncio.get_running_loop().create_future()
        if self.down and ":beat:" not in channel:
            raise ConnectionError("Redis is away")
        if ":beat:" not in channel:
            self.published.append(message)

    @asynccontextmanager
    async def subscribe_many(self, *_channels: str) -> AsyncIterator[Never]:
        yield Never()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "ANNOUNCE_SECONDS", 0.2)
    monkeypatch.setattr(module, "LEASE_SECONDS", 0.05)
    monkeypatch.setattr(module, "MARGIN_SECONDS", 0.0)
    monkeypatch.setattr(module, "RETRY_MOST", 0.2)


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


class Heard(list[str]):
    """A revocation listener that writes down what it is told (resyncs aside)."""

    def token_revoked(self, digest: str) -> None:
        self.append(digest)

    def user_revoked(self, user_id: int) -> None:
        self.append(f"user {user_id}")

    def resync(self) -> None:
        return None


async def started(broadcast: FlakyBroadcast) -> tuple[Revocations, list[str]]:
    revocations = Revocations(broadcast, ViewerCache(), "revocations", shared=True)  # type: ignore[arg-type]
    heard = Heard()
    await revocations.start(heard)
    return revocations, heard


async def nothing() -> None:
    return None


async def test_a_revocation_redis_refuses_takes_effect_here_and_is_retried(quick: None) -> None:
    broadcast = FlakyBroadcast()
    revocations, heard = await started(broadcast)
    try:
        deleted: list[str] = []

        async def delete() -> None:
            deleted.append("a")

        await revocations.revoke(["a", "a-session"], delete)
        assert deleted == ["a"] and heard == ["a", "a-session"]  # at once, here
        assert broadcast.published == [] and revocations.pending == 2
        broadcast.down = False
        await until(lambda: revocations.pending == 0)
        assert broadcast.published == ["revoke a a-session"]
    finally:
        await revocations.stop()


async def test_a_database_failure_revokes_nothing(quick: None) -> None:
    broadcast = FlakyBroadcast()
    broadcast.down = False
    revocations, heard = await started(broadcast)

    async def delete() -> None:
        raise OSError("Postgres is away")

    try:
        with pytest.raises(OSError):
            await revocations.revoke("a", delete)
        assert heard == [] and broadcast.published == [] and revocations.pending == 0
    finally:
        await revocations.stop()


async def test_waiting_announcements_coalesce_and_past_the_bound_one_resync_stands_for_them(
    quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "MAX_PENDING", 3)
    broadcast = FlakyBroadcast()
    revocations, _ = await started(broadcast)
    try:
        await revocations.revoke("a", nothing)
        await revocations.revoke_user(7, nothing)
        await revocations.revoke("a", nothing)  # the same token again: one item
        await revocations.revoke("b", nothing)
        assert revocations.pending == 3
        await revocations.revoke("c", nothing)
        assert revocations.pending == 1  # a resync of every process, instead
        await revocations.revoke_user(8, nothing)  # the resync is sent after this: it covers it
        assert revocations.pending == 1
        broadcast.down = False
        await until(lambda: revocations.pending == 0)
        assert broadcast.published == [RESYNC]
    finally:
        await revocations.stop()


async def test_digests_waiting_go_out_together(quick: None) -> None:
    broadcast = FlakyBroadcast()
    revocations, _ = await started(broadcast)
    try:
        await revocations.revoke("a", nothing)
        await revocations.revoke_user(7, nothing)
        await revocations.revoke("b", nothing)
        broadcast.down = False
        await until(lambda: revocations.pending == 0)
        assert sorted(broadcast.published) == ["revoke a b", "revoke-user 7"]
    finally:
        await revocations.stop()


async def test_on_shutdown_what_waits_is_tried_once_more_then_logged(
    quick: None, caplog: pytest.LogCaptureFixture
) -> None:
    broadcast = FlakyBroadcast()
    revocations, _ = await started(broadcast)
    await revocations.revoke("a", nothing)
    broadcast.down = False  # Redis is back, but the retry has not come round yet
    await revocations.stop()
    assert broadcast.published == ["revoke a"] and revocations.pending == 0

    broadcast = FlakyBroadcast()
    revocations, _ = await started(broadcast)
    await revocations.revoke("b", nothing)
    broadcast.hung = True  # and now Redis answers nothing at all: shutdown does not wait on it
    stopping = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="chat.revocations"):
        await revocations.stop()
    assert time.monotonic() - stopping < module.SHUTDOWN_SECONDS + 1
    assert revocations.pending == 1 and "never took" in caplog.text
