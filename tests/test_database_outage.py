"""While Postgres is away (stopped, crashed, restarting, failing over to a standby), every HTTP
operation that needs it is answered 503 SERVICE_UNAVAILABLE with Retry-After, never as an
internal error; the server keeps serving, recovers on its own, and loses nothing it acknowledged.

Each test runs its own Postgres cluster behind a loopback proxy (the part DNS plays on Heroku),
with real traffic running: posts, reads, and token lookups that miss the viewer cache.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from core.errors import DatabaseUnavailable, ServiceUnavailable
from core.outages import is_database_unavailable
from tests.support.graphql import CREATE_MESSAGE, GraphQLClient, create_room, sign_up
from tests.support.processes import SHARED_REDIS_URL, PrivatePostgres, Server, free_port, migrate
from tests.support.tcpproxy import TCPProxy
from tests.support.waiting import until, until_sync

READ = "query($r: ID!) { room(id: $r) { messages(first: 3) { edges { node { id } } } } }"
LOOKUP = "{ me { id } }"  # with a token nobody has: never remembered, so always read from Postgres
HISTORY = """query($r: ID!, $after: String) {
  room(id: $r) { messages(first: 100, after: $after) {
    edges { node { id body } } pageInfo { hasNextPage endCursor } } }
}"""


@dataclass
class Outcome:
    kind: str
    started: float
    ended: float
    status: int
    codes: list[str]
    retry_after: str | None
    acknowledged: dict | None = None  # a post's message, when it was answered 200 with data


@dataclass
class Traffic:
    """Three clients, each sending one kind of operation back to back until stopped."""

    url: str
    token: str
    room: str
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for kind in ("post", "read", "lookup"):
            thread = threading.Thread(target=self._run, args=(kind,), name=f"traffic-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)

    def _run(self, kind: str) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            count = 0
            while not self._stop.is_set():
                count += 1
                self.outcomes.append(self._send(http, kind, count))
                time.sleep(0.01)

    def _send(self, http: httpx.Client, kind: str, count: int) -> Outcome:
        token = self.token
        if kind == "post":
            query, variables = CREATE_MESSAGE, {"room": self.room, "body": f"m{count}-{uuid.uuid4().hex[:6]}"}
        elif kind == "read":
            query, variables = READ, {"r": self.room}
        else:
            query, variables, token = LOOKUP, {}, f"unknown-{uuid.uuid4().hex}"
        started = time.monotonic()
        try:
            response = http.post(
                "/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as error:  # never expected: recorded, and the checks below fail on it
            return Outcome(kind, started, time.monotonic(), 0, [f"transport: {type(error).__name__}"], None)
        ended = time.monotonic()
        body = response.json()
        codes = [error.get("extensions", {}).get("code") for error in body.get("errors") or []]
        acknowledged = None
        if kind == "post" and response.status_code == 200 and not codes:
            acknowledged = body["data"]["createMessage"]
        return Outcome(
            kind, started, ended, response.status_code, codes, response.headers.get("retry-after"), acknowledged
        )


def answered_as_promised(outcome: Outcome) -> bool:
    """200 with data and no errors, or 503 whose every error is SERVICE_UNAVAILABLE, with Retry-After."""
    if outcome.status == 200:
        return not outcome.codes
    retry_after = outcome.retry_after or ""
    return (
        outcome.status == 503
        and bool(outcome.codes)
        and set(outcome.codes) == {"SERVICE_UNAVAILABLE"}
        and retry_after.isdigit()
        and 1 <= int(retry_after) <= 10
    )


RECOVERED_SECONDS = 0.5  # after /readyz answers again, every request started within this succeeds


@dataclass
class Window:
    """One outage: the database was certainly away from `down` to `restoring`, and answered again
    (by /readyz) at `ready`."""

    name: str
    down: float
    restoring: float
    ready: float


ACKNOWLEDGED_EACH_SIDE = 11  # posts acknowledged before and after each outage: `check` wants > 20


def enough_traffic(traffic: Traffic, since: float) -> bool:
    """Since `since`: every kind answered, and ACKNOWLEDGED_EACH_SIDE posts acknowledged."""
    outcomes = [o for o in list(traffic.outcomes) if o.started >= since]
    acknowledged = sum(1 for o in outcomes if o.acknowledged)
    return {o.kind for o in outcomes} == {"post", "read", "lookup"} and acknowledged >= ACKNOWLEDGED_EACH_SIDE


def outage(
    traffic: Traffic, server: Server, name: str, go_down: Callable[[], None], come_back: Callable[[], None], hold: float
) -> Window:
    since = time.monotonic()
    until_sync(  # traffic while all is well: every kind answered, posts acknowledged
        lambda: enough_traffic(traffic, since), f"{name}: traffic before the outage", timeout=30
    )
    go_down()
    down = time.monotonic()
    time.sleep(hold)
    restoring = time.monotonic()
    come_back()
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, f"{name}: /readyz never came back"
        time.sleep(0.1)
    ready = time.monotonic()
    # Traffic after recovery: `check` wants answers to what started in the first RECOVERED_SECONDS
    # after /readyz, so the next outage waits until that span is over and some have come back.
    until_sync(
        lambda: (
            time.monotonic() > ready + RECOVERED_SECONDS
            and any(ready <= o.started < ready + RECOVERED_SECONDS for o in list(traffic.outcomes))
            and enough_traffic(traffic, ready)
        ),
        f"{name}: traffic after recovery",
        timeout=30,
    )
    return Window(name, down, restoring, ready)


def check(traffic: Traffic, windows: list[Window], server: Server, client: GraphQLClient) -> None:
    outcomes = list(traffic.outcomes)
    wrong = [outcome for outcome in outcomes if not answered_as_promised(outcome)]
    assert not wrong, f"{len(wrong)} of {len(outcomes)} answered otherwise, e.g. {wrong[:5]}\n{server.log()[-4000:]}"
    for window in windows:
        during = [o for o in outcomes if o.started >= window.down and o.ended <= window.restoring]
        kinds = {o.kind for o in during}
        assert kinds == {"post", "read", "lookup"}, f"{window.name}: the outage saw only {kinds}"
        assert all(o.status == 503 for o in during), f"{window.name}: {[o for o in during if o.status != 503][:3]}"
        recovered = [o for o in outcomes if window.ready <= o.started < window.ready + RECOVERED_SECONDS]
        assert recovered and all(o.status == 200 for o in recovered), f"{window.name}: {recovered[:3]}"
    # Nothing acknowledged is lost: every post answered with data is in the room's history.
    acknowledged = {o.acknowledged["id"]: o.acknowledged["body"] for o in outcomes if o.acknowledged}
    assert len(acknowledged) > 20
    stored: dict[str, str] = {}
    after: str | None = None
    while True:
        page = client.data(HISTORY, {"r": traffic.room, "after": after}, traffic.token)["room"]["messages"]
        stored.update((edge["node"]["id"], edge["node"]["body"]) for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    missing = {id_: body for id_, body in acknowledged.items() if stored.get(id_) != body}
    assert not missing, f"acknowledged but not stored: {missing}"
    assert "Traceback" not in server.log()


@dataclass
class Stack:
    primary: PrivatePostgres
    proxy: TCPProxy
    server: Server
    env: dict[str, str]


@pytest.fixture
def stack() -> Iterator[Stack]:
    """Postgres of our own, reached through the proxy by a two-worker server on the shared Redis."""
    primary = PrivatePostgres().start()
    proxy = TCPProxy(primary.port).start()
    env = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{proxy.port}/postgres",
        "REDIS_URL": SHARED_REDIS_URL,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "DATABASE_ACQUIRE_TIMEOUT": "2",
    }
    server: Server | None = None
    try:
        migrate(env)
        server = Server(env=env, workers=2).start()
        yield Stack(primary, proxy, server, env)
    finally:
        if server is not None:
            server.stop()
        proxy.stop()
        primary.remove()


def start_traffic(stack: Stack) -> tuple[Traffic, GraphQLClient]:
    client = GraphQLClient(stack.server.url)
    ann = sign_up(client, "Ann")
    room = create_room(client, ann, f"room-{uuid.uuid4().hex[:6]}")
    return Traffic(stack.server.url, ann.token, room).start(), client


def test_stopped_crashed_and_restarted_postgres_is_answered_503_and_recovered_from(stack: Stack) -> None:
    traffic, client = start_traffic(stack)
    primary = stack.primary
    late: Server | None = None

    def stop_and_boot_a_worker() -> None:
        nonlocal late
        primary.stop("fast")
        # A worker that starts now (recycled, respawned) must start: gunicorn stops the whole
        # server when a worker fails to boot.
        late = Server(env=stack.env, workers=1).start()

    try:
        windows = [outage(traffic, stack.server, "fast stop", stop_and_boot_a_worker, primary.start, hold=1.0)]
        assert late is not None and late.process is not None and late.process.poll() is None
        late_client = GraphQLClient(late.url)
        assert late_client.data(READ, {"r": traffic.room}, traffic.token)["room"] is not None
        windows.append(outage(traffic, stack.server, "crash", lambda: primary.stop("immediate"), primary.start, 1.5))
        windows.append(outage(traffic, stack.server, "restart", lambda: primary.stop("fast"), primary.start, 0.5))
    finally:
        traffic.stop()
        if late is not None:
            late.stop()
    check(traffic, windows, stack.server, client)
    assert "The database is unavailable" in stack.server.log()
    assert "The database answers again" in stack.server.log()


def test_failover_to_a_promoted_standby_is_answered_503_and_recovered_from(stack: Stack) -> None:
    primary = stack.primary
    standby = primary.standby()
    try:
        # Synchronous replication: a commit is acknowledged once the standby has it, so a
        # failover loses nothing acknowledged even when the primary crashes.
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.sql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while primary.sql("SELECT string_agg(sync_state, ',') FROM pg_stat_replication") != "sync":
            assert time.monotonic() < deadline, "the standby never became synchronous"
            time.sleep(0.1)
        traffic, client = start_traffic(stack)

        def fail_over() -> None:
            standby.promote()
            stack.proxy.switch(standby.port)

        try:
            windows = [outage(traffic, stack.server, "failover", lambda: primary.stop("immediate"), fail_over, 1.5)]
        finally:
            traffic.stop()
        check(traffic, windows, stack.server, client)
        assert standby.sql("SELECT pg_is_in_recovery()") == "f"
    finally:
        standby.remove()


def test_outages_are_told_from_other_database_errors() -> None:
    """The classification, on errors a real server and a real socket raise."""
    postgres = PrivatePostgres().start()

    async def exercise() -> None:
        refused = await _raised(asyncpg.connect(host="127.0.0.1", port=free_port(), user="postgres"))
        assert isinstance(refused, OSError) and is_database_unavailable(refused)

        admin = await asyncpg.connect(host="127.0.0.1", port=postgres.port, user="postgres")
        try:
            await admin.execute("CREATE ROLE limited LOGIN CONNECTION LIMIT 0")
            too_many = await _raised(asyncpg.connect(host="127.0.0.1", port=postgres.port, user="limited"))
            assert isinstance(too_many, asyncpg.TooManyConnectionsError) and is_database_unavailable(too_many)

            victim = await asyncpg.connect(host="127.0.0.1", port=postgres.port, user="postgres")
            await admin.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
            pid = victim.get_server_pid()

            async def exited() -> bool:
                return await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0

            await until(exited, "the terminated backend has exited")
            terminated = await _raised(victim.fetch("SELECT 1"))
            assert is_database_unavailable(terminated), repr(terminated)
            again = await _raised(victim.fetch("SELECT 1"))
            assert isinstance(again, asyncpg.InterfaceError) and is_database_unavailable(again), repr(again)

            for statement in ("SELECT * FROM nowhere", "SELEC 1", "SELECT 1/0"):
                error = await _raised(admin.fetch(statement))
                assert isinstance(error, asyncpg.PostgresError) and not is_database_unavailable(error), statement
            cancelled = await _raised(admin.execute("SET statement_timeout = 50; SELECT pg_sleep(1)"))
            assert isinstance(cancelled, asyncpg.QueryCanceledError) and not is_database_unavailable(cancelled)

            assert is_database_unavailable(DatabaseUnavailable(refused))
            assert not is_database_unavailable(ServiceUnavailable("The server is busy; try again shortly."))
            assert not is_database_unavailable(RuntimeError("a bug"))
        finally:
            await admin.close()

    try:
        asyncio.run(exercise())
    finally:
        postgres.remove()


async def _raised(awaitable: object) -> BaseException:
    try:
        await awaitable  # type: ignore[misc]
    except Exception as error:
        return error
    raise AssertionError("expected an error")
