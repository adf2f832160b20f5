"""OpenTelemetry: what the real server (gunicorn, two workers, Postgres, Redis) exports over
OTLP/HTTP to a real receiver on loopback (tests.support.otlp), after a known workload: every
metric reads what the workload implies, summed over the workers; a traced mutation's server,
publish and deliver spans share its trace; no message body or token reaches the receiver; and
without an endpoint no exporter thread runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from websockets.asyncio.client import connect

from core.settings import ConfigurationError, load
from telemetry import record
from telemetry.running import exports, resource_attributes
from tests.support.graphql import GraphQLClient, create_room, join_room, post_many, post_message, sign_up
from tests.support.httpstream import open_sse
from tests.support.otlp import Receiver
from tests.support.processes import (
    BASE_ENV,
    POSTGRES_ADMIN_URL,
    ROOT,
    SHARED_REDIS_URL,
    PrivateRedis,
    Server,
    migrate,
)
from tests.support.waiting import until, until_sync
from tests.support.webhooks import Receiver as WebhookReceiver
from tests.support.wsclient import LEGACY_WS, MESSAGE_CREATED, TRANSPORT_WS, GraphQLWebSocket, worker_pids

TYPING = "mutation($room: ID!) { typing(room: $room) }"
SLOW_SUBSCRIPTION = "subscription($r: ID!) { messageCreated(room: $r) { id seq body } }"
TYPING_RATE = 3  # typing heartbeats a user may send per window (RATE_LIMIT_TYPING)
SEND_QUEUE = 16  # WS_SEND_QUEUE: a slow consumer's frames past it close its connection
MISSING_ROOM = "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }"


def telemetry_env(
    database_url: str, endpoint: str | None, dyno: str = "web.1", redis_url: str = SHARED_REDIS_URL
) -> dict[str, str]:
    """A server's settings; `dyno`: its own for each server exporting to the module's receiver."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHANNEL_PREFIX": f"test-{uuid.uuid4().hex[:10]}:",
        "RATE_LIMIT_TYPING": f"{TYPING_RATE}/600",
        "WS_SEND_QUEUE": str(SEND_QUEUE),
    }
    if endpoint is not None:
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_SERVICE_NAME": "chat-test",
            "HEROKU_RELEASE_VERSION": "v42",
            "DYNO": dyno,
            "LOG_FORMAT": "json",
        }
    return env


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def observed(database_url: str, receiver: Receiver) -> Iterator[Server]:
    server = Server(env=telemetry_env(database_url, receiver.endpoint, "web.5"), workers=2).start()
    yield server
    server.stop()


def worker_threads(server: Server) -> list[int]:
    assert server.process is not None
    return [len(list(Path(f"/proc/{pid}/task").iterdir())) for pid in worker_pids(server.process.pid)]


@pytest.fixture
def fresh(database_url: str) -> Iterator[tuple[Server, Receiver]]:
    """A server and a receiver of the test's own: what it exports is the test's workload alone."""
    with Receiver() as receiver:
        server = Server(env=telemetry_env(database_url, receiver.endpoint), workers=2).start()
        yield server, receiver
        server.stop()


async def test_the_metrics_read_what_the_workload_implies(fresh: tuple[Server, Receiver]) -> None:
    observed, receiver = fresh
    client = GraphQLClient(observed.url)
    plain = mutations = 0
    try:
        alice, bob = sign_up(client, "Alice"), sign_up(client, "Bob")
        room = create_room(client, alice)
        join_room(client, bob, room)
        plain += 4
        mutations += 4

        # K = 3 WebSockets (two graphql-transport-ws, one graphql-ws) and 2 SSE streams: S = 5
        # subscribers of the room's messages, across both workers.
        sockets = []
        for protocol in (TRANSPORT_WS, TRANSPORT_WS, LEGACY_WS):
            ws = await GraphQLWebSocket.open(observed.ws_url, protocol, bob.token)
            await ws.subscribe("m", MESSAGE_CREATED, {"room": room})
            await ws.barrier()
            sockets.append(ws)
        streams = [await open_sse(observed.url, MESSAGE_CREATED, {"room": room}, token=bob.token) for _ in range(2)]

        def active(transport: str) -> float:
            return receiver.total("graphql.server.subscription.active", **{"chat.transport": transport})

        await until(
            lambda: active("graphql_transport_ws") == 2 and active("graphql_ws") == 1 and active("sse") == 2,
            "five subscriptions active",
        )
        connections = {"graphql_transport_ws": 2, "graphql_ws": 1, "sse": 2}
        for transport, count in connections.items():
            assert receiver.total("chat.realtime.connection.active", **{"chat.transport": transport}) == count

        # M = 4 messages (4 more mutations), each to every subscriber.
        bodies = [f"secret-body-{uuid.uuid4().hex}" for _ in range(4)]
        for body in bodies:
            post_message(client, alice, room, body)
        plain += 4
        mutations += 4
        for ws in sockets:
            assert [m["body"] for m in await ws.messages("m", 4)] == bodies
        for stream in streams:
            assert [m["body"] for m in await stream.data("messageCreated", 4)] == bodies

        # A rate-limited burst: TYPING_RATE + 2 heartbeats, the last 2 refused.
        refused = 0
        for _ in range(TYPING_RATE + 2):
            body = client.post(TYPING, {"room": room}, alice.token)
            refused += bool(body.get("errors"))
        plain += TYPING_RATE + 2
        mutations += TYPING_RATE + 2
        assert refused == 2

        field = {"graphql.subscription.field": "messageCreated"}
        await until(lambda: receiver.total("chat.fanout.deliveries", **field) == 5 * 4, "20 deliveries")
        executions = receiver.total("chat.fanout.executions", **field)
        # One group (one selection) per worker with subscribers: an execution per event on each,
        # and one latency per event on each (however many groups or feeds delivered it there).
        assert executions in (4, 8), executions
        await until(
            lambda: receiver.total("chat.delivery.latency", **field) == executions,
            "a latency per event per worker",
        )
        await until(lambda: receiver.total("chat.ratelimit.refusals", **{"chat.ratelimit.rule": "typing"}) == 2, "2")
        await until(
            lambda: receiver.total("http.server.request.duration", **{"http.route": "/graphql"}) == plain,
            f"{plain} plain requests",
        )
        await until(
            lambda: (
                receiver.total("graphql.server.request.duration", **{"graphql.operation.type": "mutation"}) == mutations
            ),
            f"{mutations} mutations",
        )
        assert receiver.total("graphql.server.request.duration", **{"error.type": "RATE_LIMITED"}) == 2
        # A method of the client's own is one value, whatever it is.
        assert httpx.request("PROPFIND", f"{observed.url}/graphql").status_code == 405
        await until(
            lambda: receiver.total("http.server.request.duration", **{"http.request.method": "_OTHER"}) == 1,
            "the odd method counted as _OTHER",
        )
        rate_limited = {"graphql.error.code": "RATE_LIMITED", "graphql.operation.type": "mutation"}
        assert receiver.total("chat.graphql.errors", **rate_limited, **{"chat.transport": "http"}) == 2
        assert receiver.total("db.client.connection.count", **{"db.client.connection.pool.name": "postgres"}) >= 2
        assert receiver.total("db.client.connection.wait_time", **{"db.client.connection.pool.name": "postgres"}) > 0
        assert receiver.total("db.client.connection.count", **{"db.client.connection.pool.name": "redis"}) >= 2
        assert receiver.total("db.client.connection.wait_time", **{"db.client.connection.pool.name": "redis"}) > 0
        assert receiver.total("db.client.connection.timeouts") == 0
        assert receiver.total("chat.redis.pubsub.reconnects") == 0
        await until(lambda: receiver.total("chat.event_loop.lag") >= 2, "a lag sample from each worker")

        # Closed by their clients: nothing active, a duration for each, closed by the client.
        for ws in sockets:
            await ws.close()
        for stream in streams:
            await stream.aclose()
        await until(lambda: sum(active(t) for t in connections) == 0, "no subscription active")
        for transport, count in connections.items():
            await until(
                lambda t=transport: receiver.total("chat.realtime.connection.active", **{"chat.transport": t}) == 0,
                f"no {transport} connection",
            )
            closed = {"chat.transport": transport, "chat.connection.close_reason": "client"}
            assert receiver.total("chat.realtime.connection.duration", **closed) == count

        # Every worker reports as its own slot of this dyno, with the release.
        assert receiver.instances() == {"web.1.0", "web.1.1"}
        resources = [r.resource for m in list(receiver.metrics) for r in m.resource_metrics]
        versions = {a.value.string_value for r in resources for a in r.attributes if a.key == "service.version"}
        assert versions == {"v42"}

        # Neither a message body nor a token reached the receiver, in any export.
        raw = b"".join(list(receiver.raw))
        for secret in [*bodies, alice.token, bob.token]:
            assert secret.encode() not in raw
    finally:
        client.close()


WEBHOOK_RETRY_FOR = 5  # seconds: a receiver refusing an event this long makes the dispatcher skip it
WEBHOOK_ENV = {
    "WEBHOOK_SECRET": "telemetry-secret",
    "WEBHOOK_TIMEOUT_SECONDS": "1",
    "WEBHOOK_LEASE_SECONDS": "8",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "WEBHOOK_RETRY_MAX_SECONDS": "1",
    "WEBHOOK_RETRY_FOR_SECONDS": str(WEBHOOK_RETRY_FOR),
    "WEBHOOK_POLL_SECONDS": "0.3",
}
RETRYABLE = (500, 429, 408)


def webhook_answer(payload: dict, attempt: int) -> int:
    """By a marker in a created message's body: `flaky-<n>` fails its first try with RETRYABLE[n],
    `refuse` gets a 400 (skipped at once), `doomed` a 503 every time (skipped past the window)."""
    body = (payload["data"].get("message") or {}).get("body", "") if payload["type"] == "message.created" else ""
    if body.startswith("flaky-") and attempt == 1:
        return RETRYABLE[int(body.split("-")[1])]
    if body == "refuse":
        return 400
    if body == "doomed":
        return 503
    return 200


async def test_webhook_attempts_latency_and_backlog_read_what_the_receiver_saw(database_url: str) -> None:
    hooks = WebhookReceiver(answer=webhook_answer).start()
    with Receiver() as receiver:
        env = telemetry_env(database_url, receiver.endpoint) | WEBHOOK_ENV | {"WEBHOOK_URL": hooks.url}
        server = Server(env=env, workers=2).start()
        client = GraphQLClient(server.url)
        try:
            alice, bob = sign_up(client, "Alice"), sign_up(client, "Bob")
            room = create_room(client, alice)
            join_room(client, bob, room)
            bodies = ["plain", "flaky-0", "flaky-1", "refuse", "flaky-2", "doomed", "last"]
            for body in bodies:
                post_message(client, alice, room, body)

            def arrived(body: str) -> bool:
                return any(
                    r.acknowledged and (r.payload["data"].get("message") or {}).get("body") == body
                    for r in hooks.snapshot()
                )

            await until(lambda: arrived("last"), "the last event acknowledged, past the doomed one", 30)

            # What each attempt came to, from the receiver's side: a 2xx delivered; a 400 skipped;
            # a retryable answer retried, but the doomed event's last one, given up (skipped).
            seen = hooks.snapshot()
            doomed = [r for r in seen if r.answer == 503]
            assert len(doomed) >= 2 and len({r.payload["id"] for r in doomed}) == 1
            expected = {
                "delivered": sum(r.acknowledged for r in seen),
                "retried": sum(r.answer in (*RETRYABLE, 503) for r in seen) - 1,
                "skipped": sum(r.answer == 400 for r in seen) + 1,
            }
            assert expected["skipped"] == 2 and expected["retried"] == 3 + len(doomed) - 1, expected
            assert expected["delivered"] == len({r.payload["id"] for r in seen}) - 2, expected

            def attempts() -> dict[str, float]:
                return {
                    outcome: receiver.total(
                        "chat.webhook.deliveries", **{"chat.webhook.endpoint": 0, "chat.webhook.outcome": outcome}
                    )
                    for outcome in expected
                }

            await until(lambda: attempts() == expected, f"attempts by outcome: {expected}")
            latency = {"chat.webhook.endpoint": 0}
            await until(
                lambda: receiver.total("chat.webhook.delivery.latency", **latency) == expected["delivered"],
                "a latency per event delivered",
            )

            def backlog(name: str) -> dict[str, float]:
                """Each delivering worker's latest reading of the endpoint's backlog gauge."""
                return {
                    instance: point.as_int or point.as_double
                    for (instance, metric, attrs), point in receiver.latest().items()
                    if metric == name and dict(attrs) == latency
                }

            # Every delivering worker reads the same database-wide figure (max, never sum, them).
            await until(lambda: backlog("chat.webhook.backlog") == {"web.1.0": 0, "web.1.1": 0}, "no backlog")

            # A stuck receiver: 3 events wait (for less than the retry window), and for a while.
            hooks.stop()
            for n in range(3):
                post_message(client, alice, room, f"while down {n}")
            await until(
                lambda: backlog("chat.webhook.backlog") == {"web.1.0": 3, "web.1.1": 3}, "3 undelivered, on each"
            )
            await until(
                lambda: all(0.2 < age < 60 for age in backlog("chat.webhook.backlog.age").values()),
                "the oldest undelivered event's age, on each",
            )
            hooks.start()
            await until(lambda: arrived("while down 2"), "delivered once the receiver is back", 30)
            await until(lambda: backlog("chat.webhook.backlog") == {"web.1.0": 0, "web.1.1": 0}, "drained")
            assert set(backlog("chat.webhook.backlog.age").values()) == {0}
        finally:
            server.stop()
            client.close()
            hooks.stop()


def start_webhook_worker(env: dict[str, str]) -> subprocess.Popen:
    """The Procfile's optional `worker: python -m composition.webhooks`."""
    return subprocess.Popen([sys.executable, "-m", "composition.webhooks"], cwd=ROOT, env=env)


async def test_the_webhook_worker_process_exports_its_deliveries_and_the_backlog(database_url: str) -> None:
    """`python -m composition.webhooks` (WEBHOOK_IN_WEB=0 on web): it, not the web workers,
    reports the webhook metrics, as its own instance (its dyno's slot 0)."""
    hooks = WebhookReceiver().start()
    name = database_url.rsplit("/", 1)[1]
    admin = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    key = hashlib.sha256(hooks.url.encode()).hexdigest()[:32]  # db.webhooks.endpoint_key

    def registered() -> bool:
        query = f"SELECT count(*) FROM webhook_endpoints WHERE key = '{key}'"
        return (
            subprocess.run(["psql", admin, "-Atqc", query], check=True, capture_output=True, text=True).stdout == "1\n"
        )

    with Receiver() as receiver:
        web_env = telemetry_env(database_url, receiver.endpoint) | WEBHOOK_ENV
        web_env |= {"WEBHOOK_URL": hooks.url, "WEBHOOK_IN_WEB": "0"}
        server = Server(env=web_env, workers=2).start()
        client = GraphQLClient(server.url)
        worker_env = {**os.environ, **BASE_ENV, **web_env, "DYNO": "worker.1"}
        worker = start_webhook_worker(worker_env)
        try:
            await until(registered, "the worker registered the endpoint")
            alice = sign_up(client, "Alice")
            room = create_room(client, alice)
            for n in range(3):
                post_message(client, alice, room, f"from the worker {n}")
            await until(lambda: len(hooks.acknowledged().get(room, [])) >= 3, "3 messages delivered", 20)
            delivered = {"chat.webhook.endpoint": 0, "chat.webhook.outcome": "delivered"}
            # Read again each time: the room's joining may still be on its way when the messages are in.
            await until(
                lambda: (
                    receiver.total("chat.webhook.deliveries", "worker.1.0", **delivered)
                    == len(hooks.acknowledged()[room])
                ),
                "as many deliveries from the worker as the receiver acknowledged",
            )
            await until(
                lambda: (
                    receiver.total("chat.webhook.backlog", "worker.1.0") == 0
                    and any(m == "chat.webhook.backlog" for i, m, _ in receiver.latest() if i == "worker.1.0")
                ),
                "the worker's backlog reading",
            )
            assert receiver.total("chat.webhook.deliveries", "web.") == 0
            assert not any(m.startswith("chat.webhook.") for i, m, _ in receiver.latest() if i.startswith("web."))
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(10) == 0
            server.stop()
            client.close()
            hooks.stop()


async def test_a_slow_consumer_closed_is_counted(observed: Server, receiver: Receiver) -> None:
    client = GraphQLClient(observed.url)
    try:
        alice = sign_up(client, "Alice")
        room = create_room(client, alice)
    finally:
        client.close()
    before = receiver.total("chat.realtime.slow_consumer.closes", **{"chat.transport": "graphql_transport_ws"})
    # Its kernel buffer is tiny and it never reads: the server's send queue fills.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", observed.port))
    slow = await connect(observed.ws_url, subprotocols=[TRANSPORT_WS], sock=sock, max_size=None)  # type: ignore[list-item]
    await slow.send(json.dumps({"type": "connection_init", "payload": {"token": alice.token}}))
    assert json.loads(await asyncio.wait_for(slow.recv(), 5))["type"] == "connection_ack"
    subscribe = {"query": SLOW_SUBSCRIPTION, "variables": {"r": room}}
    await slow.send(json.dumps({"id": "s", "type": "subscribe", "payload": subscribe}))
    await slow.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(slow.recv(), 5))["type"] == "pong"
    slow.transport.pause_reading()
    # More than the kernel buffers between server and client hold (they grow under load, and the
    # posts share the machine with the server: a batch more while the close is not counted, six
    # at most).
    slowed = {"chat.transport": "graphql_transport_ws"}

    def counted() -> bool:
        return receiver.total("chat.realtime.slow_consumer.closes", **slowed) == before + 1

    for batch in range(6):
        await post_many(observed.url, alice.token, room, [f"{batch}.{i} {'x' * 3900}" for i in range(1500)])
        try:
            await until(counted, "the slow consumer's close counted", timeout=15)
            break
        except AssertionError:
            if batch == 5:
                raise
    closed = {**slowed, "chat.connection.close_reason": "slow_consumer"}
    await until(lambda: receiver.total("chat.realtime.connection.duration", **closed) == before + 1, "its duration")
    slow.transport.abort()


async def test_a_resume_is_measured_in_events(observed: Server, receiver: Receiver) -> None:
    client = GraphQLClient(observed.url)
    try:
        alice = sign_up(client, "Alice")
        room = create_room(client, alice)
        posted = [post_message(client, alice, room, f"resume {i}") for i in range(3)]
    finally:
        client.close()

    def resumes() -> tuple[int, float]:
        points = [
            point
            for (_, name, attributes), point in receiver.latest().items()
            if name == "chat.resume.events" and dict(attributes) == {"graphql.subscription.field": "messageCreated"}
        ]
        return sum(p.count for p in points), sum(p.sum for p in points)

    count, total = resumes()
    ws = await GraphQLWebSocket.open(observed.ws_url, TRANSPORT_WS, alice.token)
    await ws.subscribe("m", MESSAGE_CREATED, {"room": room, "after": posted[0]["id"]})
    assert [m["body"] for m in await ws.messages("m", 2)] == ["resume 1", "resume 2"]
    await until(lambda: resumes() == (count + 1, total + 2), "one resume of two events")
    await ws.close()


def test_a_traced_mutation_carries_its_trace_to_every_delivery(observed: Server, receiver: Receiver) -> None:
    client = GraphQLClient(observed.url)
    try:
        alice, bob = sign_up(client, "Alice"), sign_up(client, "Bob")
        room = create_room(client, alice)
        join_room(client, bob, room)

        async def traced() -> tuple[str, str]:
            sockets = [await GraphQLWebSocket.open(observed.ws_url, TRANSPORT_WS, bob.token) for _ in range(4)]
            for ws in sockets:
                await ws.subscribe("m", MESSAGE_CREATED, {"room": room})
                await ws.barrier()
            # Two messages first: each worker's group is measured and delivers inline after.
            for body in ("one", "two"):
                post_message(client, alice, room, body)
            for ws in sockets:
                await ws.messages("m", 2)
            trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
            headers = {"traceparent": f"00-{trace_id}-{parent}-01", "X-Request-ID": "req-telemetry-1"}
            body = client.data(
                "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }",
                {"room": room, "body": "traced"},
                alice.token,
                headers,
            )
            assert body["createMessage"]["id"]
            for ws in sockets:
                assert [m["body"] for m in await ws.messages("m", 1)] == ["traced"]
                await ws.close()
            return trace_id, parent

        trace_id, parent = asyncio.run(traced())
    finally:
        client.close()

    def in_trace() -> list:
        return [span for _, span in receiver.spans() if span.trace_id.hex() == trace_id]

    def named(name: str) -> list:
        return [span for span in in_trace() if span.name == name]

    until_sync(lambda: bool(named("mutation")) and bool(named("chat publish")), "the server and publish spans")
    (server_span,) = named("mutation")
    assert server_span.parent_span_id.hex() == parent
    attributes = {a.key: a.value.string_value for a in server_span.attributes}
    assert attributes["graphql.operation.type"] == "mutation"
    assert attributes["heroku.request_id"] == "req-telemetry-1"
    # One publish per topic the mutation announces on (the room's, its members' room lists).
    publishes = {span.span_id for span in named("chat publish")}
    assert all(span.parent_span_id == server_span.span_id for span in named("chat publish"))

    def delivered() -> int:
        return sum(
            next(a.value.int_value for a in span.attributes if a.key == "chat.fanout.subscribers")
            for span in named("chat deliver")
        )

    until_sync(lambda: delivered() == 4, "deliver spans for the four subscribers")
    delivers = named("chat deliver")
    assert 1 <= len(delivers) <= 2  # the room's event: one per worker with subscribers
    for deliver in delivers:
        assert [link.span_id for link in deliver.links] == [deliver.parent_span_id]
        assert deliver.parent_span_id in publishes
    assert len({deliver.parent_span_id for deliver in delivers}) == 1  # the room topic's publish
    # Each subscription's setup and catch-up: a short span in a trace of its own.
    spans = [span for _, span in receiver.spans()]
    for name in ("chat subscribe", "chat catch_up"):
        assert any(span.name == name for span in spans), name


async def test_operations_over_websockets_and_streams_have_their_server_span(
    observed: Server, receiver: Receiver
) -> None:
    """A query or mutation sent over either WebSocket protocol or as an SSE stream gets the
    server span a plain request gets: its type and name, its errors as events with their code;
    a stream's request joins its `traceparent`'s trace, a WebSocket's operation is a trace of
    its own (never one lasting the connection's life)."""
    client = GraphQLClient(observed.url)
    try:
        alice = sign_up(client, "Alice")
    finally:
        client.close()
    tag = uuid.uuid4().hex[:8]
    codes = {}
    for protocol, name in ((TRANSPORT_WS, f"Modern{tag}"), (LEGACY_WS, f"Legacy{tag}")):
        ws = await GraphQLWebSocket.open(observed.ws_url, protocol, alice.token)
        query = MISSING_ROOM.replace("mutation(", f"mutation {name}(")
        payload = {"query": query, "variables": {"room": "987654321", "body": "x"}, "operationName": name}
        await ws.send({"id": "q", "type": "subscribe" if protocol == TRANSPORT_WS else "start", "payload": payload})
        result = await ws.result("q")
        codes[name] = result["errors"][0]["extensions"]["code"]
        await ws.close()
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
    query = f"query Streamed{tag} {{ __typename }}"
    stream = await open_sse(observed.url, query, token=alice.token, headers=headers, operation_name=f"Streamed{tag}")
    assert [result["data"] for result in await stream.results(1)] == [{"__typename": "Query"}]
    await stream.aclose()

    def server_spans() -> dict[str, object]:
        return {span.name: span for _, span in receiver.spans() if span.kind == span.SPAN_KIND_SERVER}

    wanted = {f"mutation Modern{tag}", f"mutation Legacy{tag}", f"query Streamed{tag}"}
    until_sync(lambda: wanted <= set(server_spans()), "the three operations' server spans")
    spans = server_spans()
    for name, code in codes.items():
        span = spans[f"mutation {name}"]
        attributes = {a.key: a.value.string_value for a in span.attributes}
        assert attributes["graphql.operation.type"] == "mutation"
        assert attributes["graphql.operation.name"] == name
        assert not span.parent_span_id  # a trace of its own
        events = [(e.name, {a.key: a.value.string_value for a in e.attributes}) for e in span.events]
        assert events == [("graphql.error", {"graphql.error.code": code})], events
    streamed = spans[f"query Streamed{tag}"]
    assert (streamed.trace_id.hex(), streamed.parent_span_id.hex()) == (trace_id, parent)
    assert not streamed.events


def test_json_logs_carry_the_request_id_and_the_trace_id(observed: Server, receiver: Receiver) -> None:
    client = GraphQLClient(observed.url)
    try:
        alice = sign_up(client, "Alice")
        trace_id = uuid.uuid4().hex
        headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01", "X-Request-ID": "req-json-1"}
        # Refused inside the request's span (the room does not exist): the error's line is logged there.
        body = client.post(MISSING_ROOM, {"room": "987654321", "body": "hello"}, alice.token, headers)
        assert body["errors"], body
    finally:
        client.close()

    def lines() -> list[dict]:
        return [json.loads(line) for line in observed.log().splitlines() if line.strip()]

    # Every line is one JSON object, the arbiter's first included.
    until_sync(lambda: any(line.get("request_id") == "req-json-1" for line in lines()), "the request's lines")
    assert lines()[0]["message"].startswith("Starting gunicorn")
    mine = [line for line in lines() if line.get("request_id") == "req-json-1"]
    assert any(line.get("trace_id") == trace_id for line in mine), mine
    assert any('"POST /graphql' in line["message"] for line in mine), mine  # the access line


def test_without_an_endpoint_no_exporter_thread_runs(database_url: str, receiver: Receiver) -> None:
    """And the default text log format carries the request id too (the plain server's lines)."""
    plain = Server(env=telemetry_env(database_url, None), workers=1).start()
    exporting = Server(env=telemetry_env(database_url, receiver.endpoint, "web.9"), workers=1).start()
    try:
        for server in (plain, exporting):
            headers = {"X-Request-ID": "req-text-1"}
            answer = httpx.post(f"{server.url}/graphql", json={"query": "{ __typename }"}, headers=headers)
            assert answer.status_code == 200
        # The access line, in gunicorn's readable format, ends with the request's id; the
        # arbiter's lines (no request) are as they were.
        until_sync(lambda: "request_id=req-text-1" in plain.log(), "the request's access line")
        lines = plain.log().splitlines()
        assert any('"POST /graphql' in line and line.endswith(" request_id=req-text-1") for line in lines), lines
        assert not lines[0].startswith("{") and "request_id=" not in lines[0], lines[0]  # Starting gunicorn
        # The exporting worker runs the metric reader's and the span processor's threads; the
        # other runs exactly as many threads less.
        until_sync(lambda: "web.9.0" in receiver.instances(), "an export")
        (without,), (with_endpoint,) = worker_threads(plain), worker_threads(exporting)
        assert with_endpoint - without == 2, (without, with_endpoint)
    finally:
        plain.stop()
        exporting.stop()


async def test_a_redis_restart_is_one_pubsub_reconnect_per_worker(database_url: str, receiver: Receiver) -> None:
    redis = PrivateRedis().start()
    server = Server(env=telemetry_env(database_url, receiver.endpoint, "web.2", redis.url), workers=2).start()
    reconnects = {"web.2.0", "web.2.1"}

    def counted() -> float:
        return sum(
            point.as_int
            for (instance, name, _), point in receiver.latest().items()
            if name == "chat.redis.pubsub.reconnects" and instance in reconnects
        )

    try:
        await until(lambda: reconnects <= receiver.instances(), "both workers exporting")
        assert counted() == 0
        redis.stop()
        # Down long enough for the pub/sub readers to give up on redis-py's own retries.
        await until(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, "Redis missed")
        redis.start()
        await until(lambda: counted() == 2, "one reconnect on each worker", timeout=30)
    finally:
        server.stop()
        redis.stop()


async def test_waits_past_the_pools_timeout_are_counted(database_url: str, receiver: Receiver) -> None:
    env = {
        **telemetry_env(database_url, receiver.endpoint, "web.3"),
        "DATABASE_POOL_MAX": "1",
        "DATABASE_ACQUIRE_TIMEOUT": "0.01",
    }
    server = Server(env=env, workers=1).start()
    try:
        api = GraphQLClient(server.url)
        ann = sign_up(api, "Ann")
        api.close()
        query = "{ rooms(first: 10) { members(first: 10) { name } messages(first: 10) { edges { node { id } } } } }"
        headers = {"Authorization": f"Bearer {ann.token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
            responses = await asyncio.gather(*(http.post("/graphql", json={"query": query}) for _ in range(100)))
        unavailable = sum(
            error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            for response in responses
            for error in response.json().get("errors", [])
        )
        assert unavailable > 0

        def timeouts() -> float:
            return sum(
                point.as_int
                for (instance, name, attributes), point in receiver.latest().items()
                if name == "db.client.connection.timeouts"
                and instance == "web.3.0"
                and dict(attributes) == {"db.client.connection.pool.name": "postgres"}
            )

        def errors() -> float:
            return sum(
                point.as_int
                for (instance, name, attributes), point in receiver.latest().items()
                if name == "chat.graphql.errors"
                and instance == "web.3.0"
                and dict(attributes).get("graphql.error.code") == "SERVICE_UNAVAILABLE"
            )

        # Every error said the wait ran out, and each came from at least one wait that did.
        await until(lambda: errors() == unavailable, f"{unavailable} SERVICE_UNAVAILABLE errors")
        assert timeouts() >= max(1, len([r for r in responses if r.status_code == 503]))
    finally:
        server.stop()


async def test_the_embedded_default_exports_too(receiver: Receiver, tmp_path: Path) -> None:
    """SQLite and the in-process broadcast, one worker: requests, subscriptions and deliveries."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
        "REDIS_URL": "",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "DYNO": "web.7",
    }
    migrate(env)
    server = Server(env=env, workers=1).start()
    try:
        client = GraphQLClient(server.url)
        alice = sign_up(client, "Alice")
        room = create_room(client, alice)
        async with await open_sse(server.url, MESSAGE_CREATED, {"room": room}, token=alice.token) as stream:
            field = {"graphql.subscription.field": "messageCreated", "chat.transport": "sse"}
            await until(lambda: receiver.total("graphql.server.subscription.active", "web.7.", **field) == 1, "active")
            for i in range(3):
                post_message(client, alice, room, f"embedded {i}")
            assert len(await stream.data("messageCreated", 3)) == 3
        client.close()
        delivered = {"graphql.subscription.field": "messageCreated"}
        await until(lambda: receiver.total("chat.fanout.deliveries", "web.7.", **delivered) == 3, "3 deliveries")
        await until(lambda: receiver.total("chat.realtime.connection.active", "web.7.") == 0, "the stream closed")
        mutations = {"graphql.operation.type": "mutation"}
        assert receiver.total("graphql.server.request.duration", "web.7.", **mutations) == 5
        assert receiver.instances() >= {"web.7.0"}
    finally:
        server.stop()


def test_a_webhook_attempt_without_telemetry_is_one_integer_add() -> None:
    """No endpoint, no histograms: the delivery's commit time is not even parsed (a value that
    would not parse passes), and the attempt is counted for the first export that comes."""
    assert record.histograms is None
    key = (7, record.DELIVERED)
    before = record.counts.webhook_deliveries[key]
    record.webhook_attempt(7, record.DELIVERED, "not a time")
    assert record.counts.webhook_deliveries[key] == before + 1
    with pytest.raises(ValueError):  # what the same call parses while exporting
        datetime.fromisoformat("not a time")


def test_exports_only_what_an_endpoint_is_set_for() -> None:
    assert not exports({}, "METRICS") and not exports({}, "TRACES")
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert exports(both, "METRICS") and exports(both, "TRACES")
    assert not exports({**both, "OTEL_SDK_DISABLED": "true"}, "METRICS")
    assert not exports({**both, "OTEL_TRACES_EXPORTER": "none"}, "TRACES") and exports(both, "METRICS")
    metrics_only = {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4318/v1/metrics"}
    assert exports(metrics_only, "METRICS") and not exports(metrics_only, "TRACES")


def test_the_resource_names_the_dyno_the_slot_and_the_release() -> None:
    settings = load(
        {
            "DYNO": "web.3",
            "CHAT_WORKER_SLOT": "1",
            "HEROKU_RELEASE_VERSION": "v7",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=production,team=chat%20ops",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=secret",
        }
    )
    assert resource_attributes(settings) == {
        "deployment.environment": "production",
        "team": "chat ops",
        "service.name": "chat",
        "service.instance.id": "web.3.1",
        "service.version": "v7",
    }
    assert dict(settings.otel)["OTEL_EXPORTER_OTLP_HEADERS"] == "x-honeycomb-team=secret"
    assert "secret" not in repr(settings)  # the backend's key stays out of any printed settings
    named = load({"OTEL_SERVICE_NAME": "chat-eu"})
    assert resource_attributes(named)["service.name"] == "chat-eu"
    assert resource_attributes(named)["service.instance.id"] == "local.0"
    assert "service.version" not in resource_attributes(named)


def test_log_format_is_text_or_json() -> None:
    assert load({}).log_format == "text"
    assert load({"LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        load({"LOG_FORMAT": "logfmt"})


def test_a_new_worker_takes_the_lowest_free_slot() -> None:
    """gunicorn's pre_fork hook (serving/gunicorn.conf.py): a recycled worker's successor takes
    its slot, so its series continue under the same service.instance.id."""
    hooks = runpy.run_path(str(ROOT / "serving" / "gunicorn.conf.py"))

    def forked(*held: int) -> int:
        server = SimpleNamespace(WORKERS={pid: SimpleNamespace(slot=slot) for pid, slot in enumerate(held)})
        worker = SimpleNamespace()
        hooks["pre_fork"](server, worker)
        return worker.slot

    assert forked() == 0
    assert forked(0) == 1
    assert forked(1) == 0  # slot 0's worker was recycled
    assert forked(0, 2) == 1
    assert forked(0, 1, 2) == 3
