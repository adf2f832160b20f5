"""The live engine's rules, in process: a real Engine over the in-process broadcast, with a
schema of two fields, a topic log in memory and sinks that record what they are handed. Each
rule has a fast test of its own here, beside the end-to-end ones that drive gunicorn.

- Resume hand-over: a subscriber resuming from far back while events keep coming gets every
  event once, in order, across the log, the feed's memory and live delivery.
- Ends: an end published for a user ends that user's subscriptions on the topic, nobody else's.
- Fairness: one user's costly selections wait behind each other, never in front of another
  user's cheap one.
- Following: feeds that follow a topic share one relay (one broadcast subscription) per
  process; FOLLOW and UNFOLLOW notes change what a feed hears before they are delivered; what
  their executions need is prepared once per event for all of them, their results are
  written once every one of them has executed the event, and followers told apart only in
  leaves share one execution.
- Telemetry: an event is counted, and its delivery latency recorded, once in a process however
  many feeds and groups deliver it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from ariadne import SubscriptionType, make_executable_schema
from graphql import GraphQLError, parse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.broadcast import open_broadcast
from identity.auth import Viewer
from live import messages
from live.engine import Engine
from live.selection import Selection
from live.source import FOLLOW, PREPARED, UNFOLLOW, Event, LiveSource, per_viewer
from live.subscription import Subscription
from telemetry import record, traces
from tests.support.waiting import until

SDL = """
type Query { ok: Boolean }
type Subscription { seq: Int! slow: Int! medium: Int! prepared: Int! noted: Noted whole: Noted }
type Noted { seq: Int! own: Int! }
"""
TOPIC = "topic:1"
SLOW_SECONDS = 0.02
# Over what one user may spend inline on an event (live.feed's INLINE_SECONDS): in the backlog.
MEDIUM_SECONDS = 0.015


class MemoryLog:
    """A topic's log in memory: `seq` 1, 2, 3..."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self) -> Event:
        event = {"seq": len(self.events) + 1, "kind": "tick"}
        self.events.append(event)
        return event

    async def after(self, seq: int, limit: int) -> list[Event]:
        return self.events[seq : seq + limit]

    async def newest(self, limit: int) -> list[Event]:
        return self.events[-limit:]

    def revised(self, earlier: Event, later: Event) -> Event | None:
        return None


class RecordingSink:
    """What a transport would frame: every payload handed to it, live or history, in order."""

    def __init__(self, name: str, record: list[tuple[str, int]]) -> None:
        self.name = name
        self.record = record
        self.seqs: list[int] = []
        self.ended: list[dict] = []
        self.closed = False
        self.arrived = asyncio.Event()

    def _take(self, payload: bytes) -> None:
        data = orjson.loads(payload)["data"]
        value = next(iter(data.values()))
        self.seqs.append(value)
        self.record.append((self.name, value))
        self.arrived.set()

    def send(self, payload: bytes, event_id: str | None) -> None:
        self._take(payload)

    def history(self, results: list[tuple[bytes, str | None]]) -> None:
        for payload, _ in results:
            self._take(payload)

    async def drained(self) -> None:
        await asyncio.sleep(0)

    def end(self, payload: bytes) -> None:
        self.ended.append(orjson.loads(payload))
        self.closed = True

    def try_again_later(self) -> None:
        self.closed = True

    def token_expired(self, payload: bytes) -> None:
        self.end(payload)

    async def until(self, count: int) -> None:
        while len(self.seqs) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)


def _schema() -> Any:
    subscription = SubscriptionType()

    @subscription.source("seq")
    @subscription.source("slow")
    @subscription.source("medium")
    @subscription.source("prepared")
    @subscription.source("noted")
    @subscription.source("whole")
    async def source(*_: Any) -> AsyncIterator[Event]:  # never used: the engine serves the source
        raise AssertionError("served by the engine")
        yield {}

    @subscription.field("seq")
    def resolve_seq(event: Event, *_: Any) -> int:
        return int(event["seq"])

    @subscription.field("slow")
    async def resolve_slow(event: Event, *_: Any) -> int:
        await asyncio.sleep(SLOW_SECONDS)  # an execution that costs: the engine measures it
        return int(event["seq"])

    @subscription.field("medium")
    async def resolve_medium(event: Event, *_: Any) -> int:
        await asyncio.sleep(MEDIUM_SECONDS)
        return int(event["seq"])

    @subscription.field("prepared")
    def resolve_prepared(_event: Event, info: Any) -> int:
        value = int(info.context.get(PREPARED, -1))
        if "log" in info.context:  # what a test records of each execution, beside what sinks are handed
            info.context["log"].append(("executed", value))
        return value

    @subscription.field("noted")
    @subscription.field("whole")
    def resolve_noted(event: Event, info: Any) -> dict | None:
        """Each viewer's own (`own`: their prepared value) of one event (`seq`: everyone's); null
        for user 9 (as a `myRooms` note's room for a member who left)."""
        value = int(info.context.get(PREPARED, -1))
        return None if value // 100 == 9 else {"seq": event["seq"], "own": value}

    return make_executable_schema(SDL, subscription)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    broadcast = open_broadcast(None)
    await broadcast.connect()
    engine = Engine(
        _schema(),
        broadcast,
        channel_prefix="test:",
        context=lambda viewer: {"viewer": viewer},
        # `prepared` is read per viewer (as `myRooms` is); `noted` is a shell over its `own`, as
        # `myRooms` is over a room's unread count; `whole` is each viewer's own as a whole.
        viewer_fields={
            ("Subscription", "prepared"): per_viewer,
            ("Subscription", "noted"): per_viewer,
            ("Subscription", "whole"): per_viewer,
            ("Noted", "own"): per_viewer,
        },
        viewer_shells={("Subscription", "noted")},
        error_formatter=lambda error, debug: {"message": error.message, **(error.extensions or {})},
    )
    try:
        yield engine
    finally:
        await engine.close()
        await broadcast.disconnect()


def _viewer(user: int) -> Viewer:
    return Viewer({"id": user}, f"token-{user}")


async def _ok() -> GraphQLError | None:
    return None


class _Notes:
    """A following source's `prepare` (one per source, as resolvers.sources makes them): each
    viewer's value is their id times 100 plus the event's seq."""

    async def prepare(self, event: Event, viewers: list[Viewer]) -> dict[int, int]:
        return {viewer.id: viewer.id * 100 + event["seq"] for viewer in viewers}


def _following(user: int, followed: str) -> LiveSource:
    """A user's own topic, following `followed`, its events prepared by `_Notes`."""

    async def follows() -> list[str]:
        return [followed]

    return LiveSource(f"user:{user}", _viewer(user), _ok, follows=follows, prepare=_Notes().prepare)


def _selection(field: str, alias: str = "") -> Selection:
    query = f"subscription {{ {alias}{field} }}"
    return Selection.of(parse(query), query, None, None)


async def _publish(engine: Engine, log: MemoryLog, count: int) -> None:
    for _ in range(count):
        await engine.broadcast.publish(engine.channel(TOPIC), messages.event(log.append()))


async def test_a_resume_from_far_back_while_events_keep_coming_gets_each_once_in_order(engine: Engine) -> None:
    log = MemoryLog()
    listener = RecordingSink("listener", [])
    await engine.subscribe(LiveSource(TOPIC, _viewer(1), _ok, log=log), _selection("seq"), listener)
    await _publish(engine, log, 500)  # far more than the feed keeps in memory
    await listener.until(500)
    resumer = RecordingSink("resumer", [])
    await engine.subscribe(LiveSource(TOPIC, _viewer(2), _ok, log=log, after=10), _selection("seq"), resumer)
    await _publish(engine, log, 300)  # while it catches up: the log, then memory, then live
    await resumer.until(790)
    await listener.until(800)
    assert resumer.seqs == list(range(11, 801))
    assert listener.seqs == list(range(1, 801))


async def test_an_end_for_a_user_ends_that_users_subscriptions_and_no_one_elses(engine: Engine) -> None:
    log = MemoryLog()
    leaver, stayer = RecordingSink("leaver", []), RecordingSink("stayer", [])
    await engine.subscribe(LiveSource(TOPIC, _viewer(1), _ok, log=log), _selection("seq"), leaver)
    await engine.subscribe(LiveSource(TOPIC, _viewer(2), _ok, log=log), _selection("seq"), stayer)
    error = {"message": "You left the room.", "code": "FORBIDDEN"}
    await engine.broadcast.publish(engine.channel(TOPIC), messages.end(1, error))
    await _publish(engine, log, 1)
    await stayer.until(1)
    assert leaver.ended == [{"errors": [error]}] and leaver.seqs == []
    assert stayer.ended == [] and stayer.seqs == [1]


async def test_one_users_costly_selections_never_go_in_front_of_anothers(engine: Engine) -> None:
    """Ten distinct costly selections of user 1 (`SLOW_SECONDS` an event each) and one of user
    2 that costs too much to run inline (`MEDIUM_SECONDS`): all wait in their backlogs, and the
    background share serves user 2 first, who has used it least. So user 2 has four events
    before user 1's selections have had more than a few of theirs, though they came first."""
    log = MemoryLog()
    record: list[tuple[str, int]] = []
    costly = [RecordingSink(f"costly {n}", record) for n in range(10)]
    for number, sink in enumerate(costly):
        selection = _selection("slow", alias=f"s{number}: ")
        await engine.subscribe(LiveSource(TOPIC, _viewer(1), _ok, log=log), selection, sink)
    other = RecordingSink("other", record)
    await engine.subscribe(LiveSource(TOPIC, _viewer(2), _ok, log=log), _selection("medium"), other)
    await _publish(engine, log, 1)  # every group measured once
    await asyncio.gather(other.until(1), *(sink.until(1) for sink in costly))
    record.clear()
    await _publish(engine, log, 4)
    await other.until(5)
    costly_before = sum(1 for name, _ in record if name != "other")
    assert costly_before <= 3, record  # the piece under way when user 2's first event came, at most
    await asyncio.gather(*(sink.until(5) for sink in costly))
    assert all(sink.seqs == [1, 2, 3, 4, 5] for sink in costly)
    assert other.seqs == [1, 2, 3, 4, 5]


async def test_feeds_following_a_topic_share_one_relay_and_unfollow_at_once(engine: Engine) -> None:
    followed = "fanout:1"

    def source(user: int) -> LiveSource:
        async def follows() -> list[str]:
            return [followed]

        return LiveSource(f"user:{user}", _viewer(user), _ok, follows=follows)

    ann, bob = RecordingSink("ann", []), RecordingSink("bob", [])
    ann_subscription = await engine.subscribe(source(1), _selection("seq"), ann)
    bob_subscription = await engine.subscribe(source(2), _selection("seq"), bob)
    assert list(engine.relays.by_topic) == [followed]
    assert engine.relays.by_topic[followed].followers == {engine.feeds["user:1"], engine.feeds["user:2"]}

    async def publish(topic: str, event: Event) -> None:
        await engine.broadcast.publish(engine.channel(topic), messages.event(event))

    await publish(followed, {"seq": 1})
    await ann.until(1)
    await bob.until(1)
    # Ann stops following it: the note itself is delivered, nothing of the topic after it.
    await publish("user:1", {"seq": 2, UNFOLLOW: followed})
    await ann.until(2)
    await publish(followed, {"seq": 3})
    await bob.until(2)
    # And follows another one again, heard from the note on.
    await publish("user:1", {"seq": 4, FOLLOW: "fanout:2"})
    await ann.until(3)
    await publish("fanout:2", {"seq": 5})
    await ann.until(4)
    assert ann.seqs == [1, 2, 4, 5] and bob.seqs == [1, 3]
    assert set(engine.relays.by_topic) == {followed, "fanout:2"}
    assert isinstance(ann_subscription, Subscription) and isinstance(bob_subscription, Subscription)
    ann_subscription.close()
    bob_subscription.close()
    async with asyncio.timeout(5):  # the feeds stop in the background, and their relays with them
        while engine.relays.by_topic:
            await asyncio.sleep(0.01)


async def test_a_followed_topics_event_is_prepared_once_for_all_its_local_followers(engine: Engine) -> None:
    """Before a followed topic's event executes for anyone, the following sources' `prepare`
    reads what every local follower's execution needs, once for all of them (sources made apart,
    with one function); each execution finds its own viewer's value. A prepare that fails leaves
    the executions to do without (here: -1), and an event of a follower's own topic is not
    prepared."""
    followed = "fanout:7"
    calls: list[list[int]] = []
    failing = False

    class Notes:  # a new one per source, as resolvers.sources makes them
        async def prepare(self, event: Event, viewers: list[Viewer]) -> dict[int, int]:
            calls.append(sorted(viewer.id for viewer in viewers))
            if failing:
                raise RuntimeError("the database is away")
            return {viewer.id: viewer.id * 100 + event["seq"] for viewer in viewers}

    def source(user: int) -> LiveSource:
        async def follows() -> list[str]:
            return [followed]

        return LiveSource(f"user:{user}", _viewer(user), _ok, follows=follows, prepare=Notes().prepare)

    sinks = [RecordingSink(name, []) for name in ("ann", "bob", "cy")]
    subscriptions = [
        await engine.subscribe(source(user), _selection("prepared"), sink) for user, sink in enumerate(sinks, start=1)
    ]

    async def publish(topic: str, event: Event) -> None:
        await engine.broadcast.publish(engine.channel(topic), messages.event(event))

    await publish(followed, {"seq": 1})
    for sink in sinks:
        await sink.until(1)
    assert [sink.seqs for sink in sinks] == [[101], [201], [301]] and calls == [[1, 2, 3]]
    failing = True
    await publish(followed, {"seq": 2})
    for sink in sinks:
        await sink.until(2)
    assert [sink.seqs[-1] for sink in sinks] == [-1, -1, -1] and calls == [[1, 2, 3]] * 2
    await publish("user:1", {"seq": 3})
    await sinks[0].until(3)
    assert sinks[0].seqs == [101, -1, -1] and len(calls) == 2
    for subscription in subscriptions:
        assert isinstance(subscription, Subscription)
        subscription.close()


async def test_a_followed_topics_event_is_written_to_its_free_followers_once_all_have_executed_it(
    engine: Engine,
) -> None:
    """The free followers of a prepared event each execute it, then their results go out one
    after another (frames written together find their readers awake). A result kept for a
    subscriber goes out before anything later handed to it, its end included, and not at all
    once it closed."""
    followed = "fanout:9"
    record: list[tuple[str, int]] = []
    engine.context = lambda viewer: {"viewer": viewer, "log": record}

    def source(user: int) -> LiveSource:
        return _following(user, followed)

    sinks = [RecordingSink(name, record) for name in ("ann", "bob", "cy")]
    subscriptions = [
        await engine.subscribe(source(user), _selection("prepared"), sink) for user, sink in enumerate(sinks, start=1)
    ]
    await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 1}))
    for sink in sinks:
        await sink.until(1)
    assert sorted(record[:3]) == [("executed", 101), ("executed", 201), ("executed", 301)]
    assert sorted(record[3:]) == [("ann", 101), ("bob", 201), ("cy", 301)]
    ann, bob = subscriptions[0], subscriptions[1]
    assert isinstance(ann, Subscription) and isinstance(bob, Subscription)
    ann.keep(None, b'{"data":{"prepared":7}}', None)
    ann.deliver(None, b'{"data":{"prepared":8}}', None)
    ann.keep(None, b'{"data":{"prepared":9}}', None)
    ann.end(orjson.dumps({"errors": [{"message": "gone"}]}))
    ann.hand_over()  # nothing kept any more
    assert sinks[0].seqs == [101, 7, 8, 9] and sinks[0].ended == [{"errors": [{"message": "gone"}]}]
    bob.keep(None, b'{"data":{"prepared":10}}', None)
    bob.close()
    bob.hand_over()
    assert sinks[1].seqs == [201]


async def test_followers_told_apart_only_in_leaves_share_one_execution(engine: Engine) -> None:
    """Free followers whose selection depends on who asks only in leaves (`own`), or in a shell
    over them (`noted`: each viewer's own, or null), share one execution of a followed topic's
    prepared event, each follower's own values written into it; one whose shell is null where
    that execution's is not (or the other way) executes its own. Each gets what its own
    execution gives. A selection of an object that depends on who asks and is no shell (`whole`)
    executes for each follower."""
    followed = "fanout:13"
    users = (1, 2, 9, 3)  # user 9's `noted` is null
    sinks = [RecordingSink(f"user {user}", []) for user in users]
    subscriptions = [
        await engine.subscribe(_following(user, followed), _selection("noted { seq own }"), sink)
        for user, sink in zip(users, sinks, strict=True)
    ]
    await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 1}))
    for sink in sinks:
        await sink.until(1)
    assert [sink.seqs for sink in sinks] == [
        [{"seq": 1, "own": 101}],
        [{"seq": 1, "own": 201}],
        [None],
        [{"seq": 1, "own": 301}],
    ]
    nulled = subscriptions.pop(2)
    assert isinstance(nulled, Subscription)
    nulled.close()
    executions = record.counts.executions["noted"]
    await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 2}))
    for sink in (sinks[0], sinks[1], sinks[3]):
        await sink.until(2)
    assert [sinks[i].seqs[-1] for i in (0, 1, 3)] == [
        {"seq": 2, "own": 102},
        {"seq": 2, "own": 202},
        {"seq": 2, "own": 302},
    ]
    assert record.counts.executions["noted"] - executions == 1

    wholes = [RecordingSink(f"whole {user}", []) for user in (4, 5)]
    subscriptions += [
        await engine.subscribe(_following(user, followed), _selection("whole { seq own }"), sink)
        for user, sink in zip((4, 5), wholes, strict=True)
    ]
    executions = record.counts.executions["whole"]
    await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 3}))
    for sink in wholes:
        await sink.until(1)
    assert [sink.seqs for sink in wholes] == [[{"seq": 3, "own": 403}], [{"seq": 3, "own": 503}]]
    assert record.counts.executions["whole"] - executions == 2
    for subscription in subscriptions:
        assert isinstance(subscription, Subscription)
        subscription.close()


async def test_a_follower_whose_lock_is_held_holds_up_none_of_the_others_and_gets_each_event_in_order(
    engine: Engine,
) -> None:
    """A followed topic's prepared event goes to the free followers at once, one after another in
    the relay's task; a follower busy with an event of its own topic (its lock held) does not hold
    the event up for the others, and gets it, and the next ones, in order once it is free (the
    relay hands on one event at a time)."""
    followed = "fanout:8"

    def source(user: int) -> LiveSource:
        return _following(user, followed)

    sinks = [RecordingSink(name, []) for name in ("ann", "bob", "cy")]
    subscriptions = [
        await engine.subscribe(source(user), _selection("prepared"), sink) for user, sink in enumerate(sinks, start=1)
    ]
    busy = subscriptions[1]
    assert isinstance(busy, Subscription) and busy.feed is not None
    await busy.feed.lock.acquire()  # as while it delivers an event of its own topic
    try:
        await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 1}))
        await sinks[0].until(1)
        await sinks[2].until(1)
        await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 2}))
        assert sinks[0].seqs == [101] and sinks[2].seqs == [301] and sinks[1].seqs == []
    finally:
        busy.feed.lock.release()
    for sink in sinks:
        await sink.until(2)
    assert [sink.seqs for sink in sinks] == [[101, 102], [201, 202], [301, 302]]
    for subscription in subscriptions:
        assert isinstance(subscription, Subscription)
        subscription.close()


@pytest.fixture
def latencies() -> Iterator[Callable[[], int]]:
    """The SDK's histograms in this process, read by an in-memory reader: a function that
    says how many `chat.delivery.latency` values were recorded so far."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    record.histograms = record.Histograms(provider.get_meter("test"))

    def count() -> int:
        data = reader.get_metrics_data()
        return sum(
            point.count
            for resource in (data.resource_metrics if data is not None else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "chat.delivery.latency"
            for point in metric.data.data_points
        )

    try:
        yield count
    finally:
        record.histograms = None
        provider.shutdown()


async def test_an_event_that_four_following_feeds_deliver_is_one_latency_and_counted_once(
    engine: Engine, latencies: Callable[[], int]
) -> None:
    """A followed topic's event reaches four feeds of this process (as a room's event reaches its
    members' `myRooms`): four deliveries and one execution counted (each follower's own value
    written into it: test_followers_told_apart_only_in_leaves_share_one_execution), and one
    latency recorded,
    from publish to the last frame handed over, whether the followers deliver in the relay's task
    (prepared) or each in its own (one busy with its own topic's event). So does an event of a
    feed's own topic reaching two groups (two selections) of it."""
    followed = "fanout:11"

    def source(user: int) -> LiveSource:
        return _following(user, followed)

    sinks = [RecordingSink(f"user {user}", []) for user in range(1, 5)]
    subscriptions = [
        await engine.subscribe(source(user), _selection("prepared"), sink) for user, sink in enumerate(sinks, start=1)
    ]
    deliveries, executions = record.counts.deliveries["prepared"], record.counts.executions["prepared"]
    await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 1}))
    for sink in sinks:
        await sink.until(1)
    await until(lambda: latencies() == 1, "one latency for the event")
    assert record.counts.deliveries["prepared"] - deliveries == 4
    assert record.counts.executions["prepared"] - executions == 1

    busy = subscriptions[1]
    assert isinstance(busy, Subscription) and busy.feed is not None
    await busy.feed.lock.acquire()  # its delivery waits in a task of its own
    try:
        await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 2}))
        await sinks[0].until(2)
        assert latencies() == 1  # not before the busy follower has it too
    finally:
        busy.feed.lock.release()
    for sink in sinks:
        await sink.until(2)
    await until(lambda: latencies() == 2, "one latency for the second event")
    assert record.counts.deliveries["prepared"] - deliveries == 8

    two = [RecordingSink("seq", []), RecordingSink("aliased seq", [])]
    await engine.subscribe(LiveSource(TOPIC, _viewer(5), _ok), _selection("seq"), two[0])
    await engine.subscribe(LiveSource(TOPIC, _viewer(5), _ok), _selection("seq", alias="s: "), two[1])
    seqs = record.counts.deliveries["seq"]
    await engine.broadcast.publish(engine.channel(TOPIC), messages.event({"seq": 1}))
    for sink in two:
        await sink.until(1)
    await until(lambda: latencies() == 3, "one latency for the event of two groups")
    assert record.counts.deliveries["seq"] - seqs == 2
    for subscription in subscriptions:
        assert isinstance(subscription, Subscription)
        subscription.close()


async def test_followers_whose_executions_await_get_a_prepared_event_as_the_others_do(
    engine: Engine,
) -> None:
    """Beside a follower whose selection the executor's short path serves (nothing awaited), a
    follower whose execution awaits (an async resolver) is handed the same events of a followed
    topic, each once and in order."""
    followed = "fanout:10"

    def source(user: int) -> LiveSource:
        return _following(user, followed)

    planned, awaiting = RecordingSink("planned", []), RecordingSink("awaiting", [])
    subscriptions = [
        await engine.subscribe(source(1), _selection("prepared"), planned),
        await engine.subscribe(source(2), _selection("medium"), awaiting),
    ]
    for seq in (1, 2, 3):
        await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": seq}))
    await planned.until(3)
    await awaiting.until(3)
    assert planned.seqs == [101, 102, 103] and awaiting.seqs == [1, 2, 3]
    for subscription in subscriptions:
        assert isinstance(subscription, Subscription)
        subscription.close()


async def test_a_traced_event_of_a_followed_topic_is_one_deliver_span_linked_to_its_publish(engine: Engine) -> None:
    """A followed topic's event published under a span (its traceparent carried in the message)
    is delivered on this worker under one `chat deliver` span, a child of and linked to the
    publish span, carrying how many subscribers and executions all its followers made, as a
    feed's own topic's event is; an event with no traceparent makes no span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traces.tracer = provider.get_tracer("test")
    followed = "fanout:12"

    def source(user: int) -> LiveSource:
        return _following(user, followed)

    sinks = [RecordingSink(name, []) for name in ("ann", "bob", "cy")]
    try:
        subscriptions = [
            await engine.subscribe(source(user), _selection("prepared"), sink)
            for user, sink in enumerate(sinks, start=1)
        ]
        with traces.tracer.start_as_current_span("publish") as publish:
            carrier: dict[str, str] = {}
            traces.PROPAGATOR.inject(carrier)
        await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 1}, carrier["traceparent"]))
        await engine.broadcast.publish(engine.channel(followed), messages.event({"seq": 2}))
        for sink in sinks:
            await sink.until(2)
        delivers = [span for span in exporter.get_finished_spans() if span.name == "chat deliver"]
        assert len(delivers) == 1
        (deliver,) = delivers
        published = publish.get_span_context()
        assert deliver.parent is not None and deliver.parent.span_id == published.span_id
        assert [link.context.span_id for link in deliver.links] == [published.span_id]
        assert deliver.attributes is not None
        assert deliver.attributes["chat.fanout.subscribers"] == 3 and deliver.attributes["chat.fanout.executions"] == 1
        for subscription in subscriptions:
            assert isinstance(subscription, Subscription)
            subscription.close()
    finally:
        traces.tracer = None
        provider.shutdown()
