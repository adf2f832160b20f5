"""The hooks the other layers call: cheap enough for every request and event.

Counters are plain integers per closed attribute set, read by observable instruments when the
SDK exports (telemetry.running), so a fan-out adds to an integer once per group and event,
never per subscriber, and costs the same with telemetry off. Durations are recorded into the
SDK's histograms only while `histograms` is set (telemetry.running sets it in a worker that
exports, and clears it at the end); otherwise a hook returns after one `None` check.

Which values an attribute takes is decided by the caller from closed sets (transports, schema
fields, rules, codes): nothing here receives a room, user, token or document.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# chat.transport values.
GRAPHQL_TRANSPORT_WS = "graphql_transport_ws"
GRAPHQL_WS = "graphql_ws"
SSE = "sse"
MULTIPART = "multipart"
HTTP = "http"

KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

# chat.connection.close_reason values: who or what ended a realtime connection.
CLIENT = "client"  # the client went away or closed it
SLOW_CONSUMER = "slow_consumer"  # it let its outbox fill up
SERVER = "server"  # we closed it (a refusal, a protocol error, an outage, a drain)
COMPLETED = "completed"  # a stream whose operation ended

# db.client.connection.pool.name values.
POSTGRES = "postgres"
REDIS = "redis"

# chat.webhook.outcome values: what one attempt to deliver a webhook event came to.
DELIVERED = "delivered"  # a 2xx
RETRIED = "retried"  # a timeout, a connection error, a 408, 429 or 5xx, within the retry window
SKIPPED = "skipped"  # any other answer (3xx, 4xx), or a retryable failure past the retry window


@dataclass(slots=True)
class Counts:
    """This process's counters since it started, by attribute set."""

    connections: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    subscriptions: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    deliveries: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    executions: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    slow_consumer_closes: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: defaultdict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    refusals: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    pool_timeouts: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    pubsub_reconnects: int = 0
    # (the endpoint's position in WEBHOOK_URL, outcome) -> attempts.
    webhook_deliveries: defaultdict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))


counts = Counts()

# Each pool's (name) -> {state: connections} reader, registered when the pool connects.
pools: dict[str, Callable[[], dict[str, int]]] = {}


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """One endpoint's undelivered events, across rooms, as the database said when last read."""

    endpoint: int  # its position in WEBHOOK_URL
    events: int
    oldest_at: float | None  # when the oldest of them was committed (unix seconds), if any


# The delivering process's reader of its endpoints' backlog (transports.webhooks registers it),
# called by the exporter's thread once per export: it must not block.
webhook_backlog: Callable[[], list[WebhookBacklog]] | None = None


class Histograms:
    """The SDK's histograms, set by telemetry.running while it exports."""

    __slots__ = (
        "connection_duration",
        "delivery_latency",
        "event_loop_lag",
        "graphql_duration",
        "http_duration",
        "pool_wait",
        "resume_events",
        "webhook_latency",
    )

    def __init__(self, meter: Any) -> None:
        self.http_duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="GraphQL requests over HTTP (no streams, no upgrades).",
        )
        self.graphql_duration = meter.create_histogram(
            "graphql.server.request.duration",
            unit="s",
            description="Queries and mutations, from parse to encoded result.",
        )
        self.connection_duration = meter.create_histogram(
            "chat.realtime.connection.duration", unit="s", description="How long realtime connections lasted."
        )
        self.delivery_latency = meter.create_histogram(
            "chat.delivery.latency",
            unit="s",
            description="From publish (after commit) to the frame handed to the transport.",
        )
        self.resume_events = meter.create_histogram(
            "chat.resume.events", unit="{event}", description="Events a resuming subscriber caught up with."
        )
        self.pool_wait = meter.create_histogram(
            "db.client.connection.wait_time", unit="s", description="Time to take a connection from a pool."
        )
        self.event_loop_lag = meter.create_histogram(
            "chat.event_loop.lag", unit="s", description="How late the event loop ran a timer."
        )
        self.webhook_latency = meter.create_histogram(
            "chat.webhook.delivery.latency",
            unit="s",
            description="From a webhook event's commit to the receiver's 2xx.",
        )


histograms: Histograms | None = None

# Attribute sets, built once per distinct value (the SDK copies what it is given): every key is
# from a closed set, and each cache is bounded all the same (past it, a set is built per call).
ATTRIBUTE_SETS = 512
_attribute_sets: dict[tuple[Any, ...], dict[str, Any]] = {}


def _attributes(key: tuple[Any, ...], build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    attributes = _attribute_sets.get(key)
    if attributes is None:
        attributes = build()
        if len(_attribute_sets) < ATTRIBUTE_SETS:
            _attribute_sets[key] = attributes
    return attributes


def clock() -> float:
    """A start time for the hooks that measure a duration."""
    return time.perf_counter()


def http_request(method: str, route: str, status: int, started: float) -> None:
    """A plain HTTP request answered (never a stream or an upgrade)."""
    h = histograms
    if h is not None:
        # Any other method is the client's word: one value for all of them (the conventions' _OTHER).
        method = method if method in KNOWN_METHODS else "_OTHER"
        attributes = _attributes(
            ("http", method, route, status),
            lambda: {"http.request.method": method, "http.route": route, "http.response.status_code": status},
        )
        h.http_duration.record(time.perf_counter() - started, attributes)


def error_codes(result: dict) -> list[str]:
    """The codes of a formatted result's errors (every error the service formats has one)."""
    errors = result.get("errors")
    if not errors:
        return []
    return [str((error.get("extensions") or {}).get("code") or "INTERNAL_SERVER_ERROR") for error in errors]


def graphql_request(operation_type: str, error_codes: list[str], transport: str, started: float) -> None:
    """A query or mutation answered: its duration, and its errors counted by code."""
    for code in error_codes:
        counts.errors[(code, operation_type, transport)] += 1
    h = histograms
    if h is not None:
        error_type = error_codes[0] if error_codes else None

        def build() -> dict[str, Any]:
            attributes = {"graphql.operation.type": operation_type}
            if error_type is not None:
                attributes["error.type"] = error_type
            return attributes

        h.graphql_duration.record(
            time.perf_counter() - started, _attributes(("graphql", operation_type, error_type), build)
        )


def graphql_errors(operation_type: str, error_codes: list[str], transport: str) -> None:
    """Errors that refused or ended an operation outside `graphql_request` (a subscription's)."""
    for code in error_codes:
        counts.errors[(code, operation_type, transport)] += 1


def connection_opened(transport: str) -> float:
    """A realtime connection (a WebSocket, an SSE or multipart stream) opened: its start time."""
    counts.connections[transport] += 1
    return time.perf_counter()


def connection_closed(transport: str, started: float, close_reason: str) -> None:
    counts.connections[transport] -= 1
    if close_reason == SLOW_CONSUMER:
        counts.slow_consumer_closes[transport] += 1
    h = histograms
    if h is not None:
        attributes = _attributes(
            ("connection", transport, close_reason),
            lambda: {"chat.transport": transport, "chat.connection.close_reason": close_reason},
        )
        h.connection_duration.record(time.perf_counter() - started, attributes)


def subscription_started(field_name: str, transport: str) -> tuple[str, str]:
    """A subscription is live: the key to give `subscription_ended` once."""
    key = (field_name, transport)
    counts.subscriptions[key] += 1
    return key


def subscription_ended(key: tuple[str, str]) -> None:
    counts.subscriptions[key] -= 1


def delivered(field_name: str, subscribers: int, executions: int, published_at: float | None) -> None:
    """One event handed to `subscribers` of a field after `executions` executions, all of this
    process's that it reaches (`Delivery` adds them up): counted once, with the latency from its
    publish (wall clock, carried in the message) to now, when it has one and reached someone."""
    counts.deliveries[field_name] += subscribers
    counts.executions[field_name] += executions
    h = histograms
    if h is not None and published_at is not None and subscribers:
        attributes = _attributes(("field", field_name), lambda: {"graphql.subscription.field": field_name})
        h.delivery_latency.record(max(0.0, time.time() - published_at), attributes)


class Delivery:
    """One event's deliveries in this process, added up across every group (and every following
    feed: live.following) it reaches, then counted and its latency recorded once per field by
    `done`, when its last frame has been handed over: a room's event that a thousand `myRooms`
    feeds deliver is one latency, not a thousand. Events told apart by their publish time (a
    gap filled under one message delivers several; those read from the log have none: counted,
    no latency). What is added after `done` (a delivery that outlived its caller) is recorded
    at once."""

    __slots__ = ("_tally", "closed", "executions", "subscribers")

    def __init__(self) -> None:
        # (field, publish time) -> [subscribers, executions]
        self._tally: dict[tuple[str, float | None], list[int]] = {}
        self.closed = False
        # Across every field, for the event's deliver span (telemetry.traces.delivered).
        self.subscribers = self.executions = 0

    def add(self, field_name: str, subscribers: int, executions: int, published_at: float | None) -> None:
        self.subscribers += subscribers
        self.executions += executions
        if self.closed:
            delivered(field_name, subscribers, executions, published_at)
            return
        tally = self._tally.get((field_name, published_at))
        if tally is None:
            self._tally[(field_name, published_at)] = [subscribers, executions]
        else:
            tally[0] += subscribers
            tally[1] += executions

    def done(self) -> None:
        self.closed = True
        for (field_name, published_at), (subscribers, executions) in self._tally.items():
            delivered(field_name, subscribers, executions, published_at)
        self._tally.clear()


def resumed(field_name: str, events: int) -> None:
    """A subscriber caught up with `events` (> 0) events of its topic's log (or memory) before
    joining live delivery: a resume, or events that raced its start."""
    h = histograms
    if h is not None:
        attributes = _attributes(("field", field_name), lambda: {"graphql.subscription.field": field_name})
        h.resume_events.record(events, attributes)


def refused(rule: str) -> None:
    """A rate limit refused a hit (`rule`: its bucket's name, a constant of the code)."""
    counts.refusals[rule] += 1


def pubsub_reconnected() -> None:
    counts.pubsub_reconnects += 1


def pool_waited(pool: str, started: float) -> None:
    """A connection was taken from `pool` after waiting since `started`."""
    h = histograms
    if h is not None:
        attributes = _attributes(("pool", pool), lambda: {"db.client.connection.pool.name": pool})
        h.pool_wait.record(time.perf_counter() - started, attributes)


def pool_timed_out(pool: str) -> None:
    counts.pool_timeouts[pool] += 1


class PoolWaits:
    """A pool's waits for a connection, for a pool that reports them by calls (Redis's)."""

    __slots__ = ("pool",)

    def __init__(self, pool: str) -> None:
        self.pool = pool

    def waited(self, started: float) -> None:
        pool_waited(self.pool, started)

    def timed_out(self) -> None:
        pool_timed_out(self.pool)


def observe_pool(pool: str, states: Callable[[], dict[str, int]]) -> None:
    """`states` tells `pool`'s connections by state ("used", "idle") when the SDK exports."""
    pools[pool] = states


def event_loop_lag(seconds: float) -> None:
    h = histograms
    if h is not None:
        h.event_loop_lag.record(seconds)


def webhook_attempt(endpoint: int, outcome: str, committed_at: datetime | str | None) -> None:
    """One attempt to deliver a webhook event to the `endpoint`-th URL of WEBHOOK_URL, and what it
    came to; a delivered one's latency from the event's commit (`committed_at`: the log's `at`,
    as the database gives it; without a zone it is UTC)."""
    counts.webhook_deliveries[(endpoint, outcome)] += 1
    h = histograms
    if h is not None and outcome == DELIVERED and committed_at is not None:
        at = datetime.fromisoformat(committed_at) if isinstance(committed_at, str) else committed_at
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        h.webhook_latency.record(max(0.0, time.time() - at.timestamp()), {"chat.webhook.endpoint": endpoint})


def observe_webhook_backlog(reader: Callable[[], list[WebhookBacklog]] | None) -> None:
    """`reader` tells the backlog when the SDK exports (None: this process delivers no more)."""
    global webhook_backlog
    webhook_backlog = reader
