"""Outgoing webhooks: every logged room event POSTed, signed, to each endpoint of WEBHOOK_URL, at
least once, in each room's log order, from the outbox in the database (db.webhooks).

- **Who delivers a room.** Any process running a Dispatcher (every web worker by default, or a
  `worker:` process) may; one at a time per room and endpoint holds its lease (db.webhooks.claim:
  a conditional UPDATE with an expiry, no election). A process stopping gives its leases back; a
  killed one's run out after WEBHOOK_LEASE_SECONDS and another takes the room over.
- **Order.** The lease holder sends the room's next event only once the previous one is
  acknowledged (a 2xx) and the position in the database moved past it. A failure stops the room
  for that endpoint until the retry; other rooms go on.
- **At least once.** The position moves after the answer: a process dying in between sends the
  event again, with the same `id` (a hash of the endpoint, room and seq). Receivers deduplicate.
- **Retries.** Timeouts, connection errors, 408, 429 and 5xx: again after an exponential backoff
  (WEBHOOK_RETRY_BASE_SECONDS doubling up to WEBHOOK_RETRY_MAX_SECONDS, each jittered to between
  half and all of it), for WEBHOOK_RETRY_FOR_SECONDS; then the event is skipped and recorded.
  Any other answer (a 3xx, a 4xx) is recorded and the event skipped at once.
- **Bounds.** At most WEBHOOK_CONCURRENCY rooms in flight per process, each holding one page of
  PAGE events; each request has WEBHOOK_TIMEOUT_SECONDS in all and reads at most
  MAX_RESPONSE_BYTES of the answer. Of the database pool (in a web worker, the requests'), at
  most webhook_events.DB_CONNECTIONS connection at once: a mutation never waits for more. A
  receiver that is down costs each room one attempt per backoff, never a wait in a request or
  in live delivery: posting a message only rings a bell (`Doorbell.published`, a bounded set)
  after its commit. Once an endpoint's attempt failed here, rings claim none of its rooms (the
  poll takes the due ones) until one succeeds.
- **Finding work.** The bell: the process that committed an event tries to take its room at
  once. And a poll every WEBHOOK_POLL_SECONDS (db.webhooks.due): retries that are due, rooms
  whose holder died, events committed while another process held the lease (the holder also
  looks again after giving it back), and everything at start-up. A holder whose room has no
  more events keeps the lease LINGER_SECONDS for the next one (its own bell, rung through the
  doorbell), unless other rooms wait for a slot: a busy room costs no claim and release per event,
  and it waits GATHER_SECONDS after a ring so a burst is read as one page. A process whose claim
  on a ring failed (another holds the room) leaves that room's rings to the holder for half of
  that: at worst an event committed just as the holder let go waits for the next poll.

Telemetry: each attempt is counted by what it came to (telemetry.record.webhook_attempt: one
integer added, and a delivered one's latency only while exporting); the backlog is read from the
database (db.webhooks.status) only when the exporter asks, at most one read at a time, and only
in a process running a Dispatcher.

Signing: `X-Chat-Timestamp` (unix seconds) and `X-Chat-Signature: v1=<hex>[,v1=<hex>...]`, the
HMAC-SHA256 of `timestamp + "." + body` under each secret of WEBHOOK_SECRET (the README shows
the receiver's check).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

import httpcore
import orjson
from databases import Database
from redis.asyncio import Redis

from core.cancelling import cancel_and_wait
from core.errors import ServiceUnavailable
from core.settings import Settings
from db import webhooks
from db.records import Row
from resolvers.topics import ROOM_TOPIC_PREFIX
from resolvers.webhook_events import WebhookEvents
from telemetry import record
from transports.webhook_network import AsyncioBackend

logger = logging.getLogger("chat.webhooks")

PAGE = 20
MAX_RESPONSE_BYTES = 64 * 1024
MAX_WOKEN = 10_000
STOP_SECONDS = 3.0
LINGER_SECONDS = 0.5
GATHER_SECONDS = 0.05
USER_AGENT = b"chat-webhooks/1"
BACKLOG_READ_SECONDS = 10.0  # the most a read of the backlog for telemetry may take
KEEPALIVE_SECONDS = 5.0  # an idle connection to a receiver is closed after this (httpx's default)

P = ParamSpec("P")
T = TypeVar("T")


def sign(secrets: tuple[str, ...], timestamp: int, body: bytes) -> str:
    """The X-Chat-Signature header: one `v1=` per secret, comma-separated."""
    signed = str(timestamp).encode() + b"." + body
    return ",".join(f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets)


def delivery_id(key: str, room_id: int, seq: int) -> str:
    """Unique per event and endpoint, the same on every attempt."""
    return "wh_" + hashlib.sha256(f"{key}:{room_id}:{seq}".encode()).hexdigest()[:32]


def backoff(attempts: int, base: float, most: float) -> float:
    """Seconds before attempt `attempts + 1`: base, doubling, capped, jittered to [half, all]."""
    delay = min(most, base * 2 ** min(attempts - 1, 40))
    return delay / 2 + random.random() * delay / 2


async def _rung(bell: asyncio.Event, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await bell.wait()
    except TimeoutError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    target: httpcore.URL
    headers: tuple[tuple[bytes, bytes], ...]  # every delivery's: Host, and a URL's credential as Basic auth
    key: str
    label: str
    index: int  # its position in WEBHOOK_URL: how telemetry names it


def _headers(url: str) -> tuple[tuple[bytes, bytes], ...]:
    """Host (the URL's host and port), then, with a `user:password@` in the URL, its Basic auth
    (as httpx sends it), the content type and the user agent."""
    parts = urlsplit(url)
    headers = [(b"host", parts.netloc.rpartition("@")[2].encode())]
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
        headers.append((b"authorization", b"Basic " + base64.b64encode(pair)))
    return (*headers, (b"content-type", b"application/json"), (b"user-agent", USER_AGENT))


def endpoints_of(settings: Settings) -> list[Endpoint]:
    return [
        Endpoint(url, httpcore.URL(url), _headers(url), webhooks.endpoint_key(url), webhooks.endpoint_label(url), index)
        for index, url in enumerate(settings.webhook_urls)
    ]


@dataclass(frozen=True, slots=True)
class Outcome:
    done: bool  # acknowledged, or to be skipped (`error` says why)
    error: str | None = None


class Doorbell:
    """Rung by the publisher after an event's commit (live.publisher's observer): the rooms the
    dispatcher should look at now. A bounded set: past MAX_WOKEN rooms, the poll finds the rest."""

    def __init__(self) -> None:
        self.rooms: set[int] = set()
        self.rung = asyncio.Event()
        self.sweep = False  # look at every room the database says is due, now (not at the poll)

    def published(self, topic: str, event: dict[str, Any]) -> None:
        room = event.get("room")
        if topic.startswith(ROOM_TOPIC_PREFIX) and "seq" in event and isinstance(room, dict):
            self.ring(int(room["id"]))

    def ring(self, room_id: int) -> None:
        """Look at the room now (past MAX_WOKEN rooms waiting, the poll finds it)."""
        if len(self.rooms) < MAX_WOKEN:
            self.rooms.add(room_id)
            self.rung.set()

    def ask_sweep(self) -> None:
        """What may have been missed (the wake-ups were away): sweep now."""
        self.sweep = True
        self.rung.set()

    def take(self) -> set[int]:
        rooms, self.rooms = self.rooms, set()
        self.rung.clear()
        return rooms

    def take_sweep(self) -> bool:
        sweep, self.sweep = self.sweep, False
        return sweep


class RoomEventsHeard:
    """A process that publishes nothing (the `worker:` line, composition.webhooks) hears the room
    events the web processes publish on Redis after each commit, and rings its doorbell for their
    rooms: it delivers an event as soon as it is committed, not at its next poll.

    One pattern subscription (`PSUBSCRIBE <CHANNEL_PREFIX>room:*`) on a connection of its own:
    the web processes publish exactly as before, nothing more. Only the channel's name is read
    (the room's id), never the event. A wake-up only hastens what the poll would find: while
    Redis is away, or for what was published while it reconnects, the poll (WEBHOOK_POLL_SECONDS)
    still finds every event in the outbox, and a reconnect asks for a sweep at once."""

    def __init__(self, redis: Redis, channel_prefix: str, doorbell: Doorbell, max_backoff: float = 5.0) -> None:
        self._redis = redis
        self._channel_prefix = channel_prefix
        self._prefix = (channel_prefix + ROOM_TOPIC_PREFIX).encode()
        self._doorbell = doorbell
        self._max_backoff = max_backoff
        self.listening = asyncio.Event()  # set while the subscription is confirmed

    @property
    def pattern(self) -> str:
        """Every room topic's channel under the prefix (the prefix's own glob characters escaped)."""
        escaped = "".join("\\" + char if char in "*?[]\\" else char for char in self._channel_prefix)
        return f"{escaped}{ROOM_TOPIC_PREFIX}*"

    async def run(self) -> None:
        """Until cancelled; a lost connection is retried with backoff."""
        attempt = 0
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(self.pattern)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "pmessage":
                        self._heard(message["channel"])
                    elif message["type"] == "psubscribe" and not self.listening.is_set():
                        self.listening.set()
                        logger.info("Hearing room events on Redis (%s)", self.pattern)
                        if attempt:  # what was published meanwhile: the poll's sweep, now
                            self._doorbell.ask_sweep()
                        attempt = 0
            except asyncio.CancelledError:
                await asyncio.shield(pubsub.aclose())
                raise
            except Exception as error:
                self.listening.clear()
                attempt += 1
                delay = min(self._max_backoff, 0.1 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.0)
                logger.warning("Hearing room events on Redis failed (%s); again in %.2fs", type(error).__name__, delay)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(delay)

    def _heard(self, channel: bytes | str) -> None:
        name = channel.encode() if isinstance(channel, str) else channel
        if name.startswith(self._prefix):
            with contextlib.suppress(ValueError):
                self._doorbell.ring(int(name[len(self._prefix) :]))


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        events: WebhookEvents,
        doorbell: Doorbell,
    ) -> None:
        self._db = db
        self._settings = settings
        self._events = events
        self._doorbell = doorbell
        self._endpoints = endpoints_of(settings)
        self._owner = uuid.uuid4().hex
        self._running: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._positions: dict[tuple[str, int], int] = {}  # each running room's position, done
        self._bells: dict[tuple[str, int], asyncio.Event] = {}  # each running room's own bell
        # Rooms whose claim failed on a ring (another process holds them), until when their
        # rings are left to that holder: it lingers longer, and looks again when it lets go.
        self._refused: dict[tuple[str, int], float] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._connections = events.connections  # at most DB_CONNECTIONS of the pool's
        # Endpoints whose last attempt here failed: a ring claims none of their rooms (each
        # claim a write, each attempt a connection refused), the poll takes those due.
        self._failing: set[str] = set()
        # The backlog telemetry reads: the last read, and the read under way (at most one).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: list[record.WebhookBacklog] = []
        self._backlog_task: asyncio.Task[None] | None = None
        self._backlog_asked = False
        # httpx's own connection pool, without httpx's client around it (its request and response
        # models, cookies and hooks cost more CPU per delivery than the request itself): one per
        # process, kept-alive connections, at most two per room in flight; its sockets on
        # asyncio's streams (transports.webhook_network), not AnyIO's. WEBHOOK_TIMEOUT_SECONDS
        # bounds each request in all (`_post`), so no operation of it is timed on its own.
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=settings.webhook_concurrency * 2,
            max_keepalive_connections=settings.webhook_concurrency * 2,
            keepalive_expiry=KEEPALIVE_SECONDS,
            retries=0,
            network_backend=AsyncioBackend(),
        )

    async def _query(self, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """`call` once one of webhook delivery's connections (webhook_events.DB_CONNECTIONS) is
        free: every database read and write here."""
        async with self._connections:
            return await call(*args, **kwargs)

    async def start(self) -> None:
        """Register the endpoints (their positions in every room, once) and start looking for
        work. A database that does not answer now is retried by the loop."""
        self._loop_task = asyncio.create_task(self._run(), name="webhooks")
        self._loop = asyncio.get_running_loop()
        record.observe_webhook_backlog(self._backlog_for_export)

    async def stop(self) -> None:
        """Deliveries in flight are cut (their events go again, same id); the leases are given
        back so another process takes the rooms at once."""
        record.observe_webhook_backlog(None)
        self._loop = None
        tasks = [task for task in (self._loop_task, self._backlog_task, *self._running.values()) if task is not None]
        positions = dict(self._positions)  # no task moves on once cancelled
        await cancel_and_wait(tasks)
        try:
            async with asyncio.timeout(STOP_SECONDS):
                # What was acknowledged is written, so a deploy sends it no second time.
                for (key, room_id), position in positions.items():
                    await self._query(webhooks.release, self._db, key, room_id, self._owner, position)
                await self._query(webhooks.release_all, self._db, self._owner)
        except Exception as error:  # the leases run out instead
            logger.warning("Giving back webhook leases failed (%s)", type(error).__name__)
        await self._pool.aclose()

    def _backlog_for_export(self) -> list[record.WebhookBacklog]:
        """The exporter's thread, once per export: the backlog as last read, and the next read
        asked of the loop (one db.webhooks.status at a time, so at most one per export)."""
        loop = self._loop
        if loop is not None and not self._backlog_asked:
            self._backlog_asked = True
            try:
                loop.call_soon_threadsafe(self._read_backlog_soon)
            except RuntimeError:  # the loop closed
                self._backlog_asked = False
        return self._backlog

    def _read_backlog_soon(self) -> None:
        if self._loop is None:  # stopping
            self._backlog_asked = False
            return
        self._backlog_task = asyncio.create_task(self._read_backlog(), name="webhook backlog")

    async def _read_backlog(self) -> None:
        try:
            async with asyncio.timeout(BACKLOG_READ_SECONDS):
                found = await self._query(webhooks.status, self._db, {e.key: e.label for e in self._endpoints})
            by_key = {row["key"]: row for row in found}
            backlog = []
            for endpoint in self._endpoints:
                row = by_key.get(endpoint.key)
                if row is None:
                    continue
                oldest: datetime | None = row["oldest_at"] if row["backlog"] else None
                if oldest is not None and oldest.tzinfo is None:
                    oldest = oldest.replace(tzinfo=UTC)  # SQLite's text has no zone: it is UTC
                backlog.append(
                    record.WebhookBacklog(endpoint.index, row["backlog"], oldest.timestamp() if oldest else None)
                )
            self._backlog = backlog
        except Exception as error:  # the last read stands; the next export asks again
            logger.warning("Reading the webhook backlog failed (%s)", type(error).__name__)
        finally:
            self._backlog_asked = False

    async def _register(self) -> None:
        at = datetime.now(UTC)
        for endpoint in self._endpoints:
            if await self._query(webhooks.register, self._db, endpoint.key, endpoint.label, at):
                logger.info("Webhook endpoint %s registered: it hears events from now on", endpoint.label)

    async def _run(self) -> None:
        poll = self._settings.webhook_poll_seconds
        registered = False
        last_poll = -poll
        while True:
            try:
                if not registered:
                    await self._register()
                    registered = True
                loop = asyncio.get_running_loop()
                woken = self._doorbell.take()
                sweep = self._doorbell.take_sweep() or loop.time() - last_poll >= poll
                if sweep:
                    last_poll = loop.time()
                waiting = await self._fill(woken, sweep)
                if waiting:  # tried again when a slot frees (the bell rings then)
                    self._doorbell.rooms |= set(list(waiting)[: MAX_WOKEN - len(self._doorbell.rooms)])
            except Exception as error:
                logger.warning("Looking for webhook work failed (%s); again shortly", type(error).__name__)
            try:
                async with asyncio.timeout(poll):
                    await self._doorbell.rung.wait()
            except TimeoutError:
                pass

    async def _fill(self, woken: set[int], sweep: bool) -> set[int]:
        """Take rooms to deliver, up to WEBHOOK_CONCURRENCY in flight: the woken ones first,
        then (on a sweep) those the database says are due. Returns the woken rooms left for
        want of a slot."""
        most = self._settings.webhook_concurrency
        now = datetime.now(UTC)
        loop = asyncio.get_running_loop()
        waiting: set[int] = set()
        for endpoint in self._endpoints:
            candidates = list(woken)
            swept: set[int] = set()
            if sweep and len(self._running) < most:
                due = await self._query(webhooks.due, self._db, endpoint.key, now, most + len(self._running))
                candidates += due
                swept = set(due)
            for room_id in dict.fromkeys(candidates):
                if (endpoint.key, room_id) in self._running:
                    if (bell := self._bells.get((endpoint.key, room_id))) is not None:
                        bell.set()  # its task reads the new events
                    continue
                if len(self._running) >= most:
                    if room_id in woken:
                        waiting.add(room_id)
                    continue
                if room_id in woken and self._refused.get((endpoint.key, room_id), 0.0) > loop.time():
                    continue  # held elsewhere a moment ago: its holder reads this event
                if endpoint.key in self._failing and room_id not in swept:
                    continue  # the receiver failed last time: the poll tries the rooms due
                lease = await self._claim(endpoint, room_id)
                if lease is not None:
                    self._spawn(endpoint, room_id, lease)
                elif room_id in woken:
                    if len(self._refused) >= MAX_WOKEN:
                        self._refused.clear()
                    self._refused[(endpoint.key, room_id)] = loop.time() + LINGER_SECONDS / 2
        return waiting

    async def _claim(self, endpoint: Endpoint, room_id: int) -> Row | None:
        now = datetime.now(UTC)
        until = self._lease_end(now)
        return await self._query(webhooks.claim, self._db, endpoint.key, room_id, self._owner, now, until)

    def _spawn(self, endpoint: Endpoint, room_id: int, lease: Row) -> None:
        task = asyncio.create_task(self._deliver_room(endpoint, room_id, lease), name="webhook-room")
        self._running[(endpoint.key, room_id)] = task

        def done(_task: asyncio.Task[None]) -> None:
            self._running.pop((endpoint.key, room_id), None)
            self._doorbell.rung.set()  # a slot is free: look again

        task.add_done_callback(done)

    async def _deliver_room(self, endpoint: Endpoint, room_id: int, lease: Row) -> None:
        held: Row | None = lease
        try:
            while held is not None:
                position = await self._deliver_backlog(endpoint, room_id, held)
                if position is None:
                    return
                await self._query(webhooks.release, self._db, endpoint.key, room_id, self._owner, position)
                # An event committed while the lease was held here rang no one else's bell.
                head = await self._query(webhooks.head, self._db, room_id)
                if head is None or head <= position:
                    return
                held = await self._claim(endpoint, room_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if isinstance(error, ServiceUnavailable):  # the database is away: the poll retries
                logger.warning("Delivering room %s to %s stopped: %s", room_id, endpoint.label, error)
            else:
                logger.exception("Delivering room %s to %s failed", room_id, endpoint.label)
            with contextlib.suppress(Exception):
                await self._query(webhooks.release, self._db, endpoint.key, room_id, self._owner)
        finally:
            self._positions.pop((endpoint.key, room_id), None)
            self._bells.pop((endpoint.key, room_id), None)

    async def _deliver_backlog(self, endpoint: Endpoint, room_id: int, lease: Row) -> int | None:
        """Deliver the room's events from the lease's position on, in order, until none are
        left (the position reached: the caller gives the lease back with it), or one failed or
        the lease was lost (None: done here).

        The position is written every PAGE events, every quarter of the lease (which renews
        it), on a skip, and with the failure or the release: a process that dies sends at most
        that much again (same ids), and no event is written done before its answer. Before a
        send, a lease renewed more than half a lease ago is renewed first: a holder held up
        past its lease in a read never sends beside the process that took the room over."""
        settings = self._settings
        loop = asyncio.get_running_loop()
        position = stored = int(lease["delivered_seq"])
        attempts = int(lease["attempts"])
        failing_since: datetime | None = lease["failing_since"]
        flushed = loop.time()
        bell = self._bells[(endpoint.key, room_id)] = asyncio.Event()
        self._events.forget(room_id)
        while True:
            bell.clear()  # a ring from now on is an event this read may miss
            page = await self._events.page(room_id, position, PAGE)
            if page is None:
                return None
            if page.head <= position:
                # A busy room keeps its lease a moment for its next event (no claim, release and
                # read of its head per event), unless other rooms wait for a slot.
                if self._doorbell.rooms or not await _rung(bell, LINGER_SECONDS):
                    return position
                await asyncio.sleep(GATHER_SECONDS)  # a burst's events go out of one page's reads
                if loop.time() - flushed >= settings.webhook_lease_seconds / 4:
                    if not await self._advanced(endpoint, room_id, position):
                        return None
                    stored, flushed = position, loop.time()
                continue
            for event in page.events:
                seq, body = event.seq, event.body
                recipients = await self._events.recipients(room_id, event)
                if recipients is not None:
                    body["recipients"] = recipients
                if loop.time() - flushed >= settings.webhook_lease_seconds / 2:
                    # A holder held up (a slow read, a busy pool) renews before it sends: past its
                    # lease another process may hold the room and send this event beside it.
                    until = self._lease_end()
                    if not await self._query(webhooks.renew, self._db, endpoint.key, room_id, self._owner, until):
                        return None
                    flushed = loop.time()
                outcome = await self._post(endpoint, {"id": delivery_id(endpoint.key, room_id, seq), **body})
                now = datetime.now(UTC)
                skipped = None
                if not outcome.done:
                    self._failing.add(endpoint.key)
                    attempts += 1
                    failing_since = failing_since or now
                    if (now - failing_since).total_seconds() < settings.webhook_retry_for_seconds:
                        record.webhook_attempt(endpoint.index, record.RETRIED, None)
                        delay = backoff(
                            attempts, settings.webhook_retry_base_seconds, settings.webhook_retry_max_seconds
                        )
                        logger.info(
                            "Webhook %s room %s seq %s: %s; retry in %.1fs",
                            endpoint.label,
                            room_id,
                            seq,
                            outcome.error,
                            delay,
                        )
                        await self._query(
                            webhooks.failed,
                            self._db,
                            endpoint.key,
                            room_id,
                            self._owner,
                            position=position,
                            attempts=attempts,
                            failing_since=failing_since,
                            next_attempt_at=now + timedelta(seconds=delay),
                            error=f"seq {seq}: {outcome.error}",
                            at=now,
                        )
                        return None
                    skipped = (f"seq {seq}: gave up after {attempts} attempts: {outcome.error}", now)
                    record.webhook_attempt(endpoint.index, record.SKIPPED, None)
                    logger.error("Webhook %s room %s: %s", endpoint.label, room_id, skipped[0])
                elif outcome.error is not None:
                    skipped = (f"seq {seq}: skipped: {outcome.error}", now)
                    logger.warning("Webhook %s room %s: %s", endpoint.label, room_id, skipped[0])
                    record.webhook_attempt(endpoint.index, record.SKIPPED, None)
                else:
                    record.webhook_attempt(endpoint.index, record.DELIVERED, event.at)
                self._failing.discard(endpoint.key)
                position, attempts, failing_since = seq, 0, None
                self._positions[(endpoint.key, room_id)] = position
                due = seq - stored >= PAGE or loop.time() - flushed >= settings.webhook_lease_seconds / 4
                if skipped is not None or due:
                    if not await self._advanced(endpoint, room_id, seq, skipped):
                        logger.warning("Webhook lease of room %s for %s was taken over", room_id, endpoint.label)
                        return None
                    stored, flushed = seq, loop.time()

    async def _advanced(
        self, endpoint: Endpoint, room_id: int, position: int, skipped: tuple[str, datetime] | None = None
    ) -> bool:
        """The room's position written (and a skip's error), its lease renewed for a whole lease
        from now; False when another process holds it now (this one stops sending)."""
        return await self._query(
            webhooks.advance, self._db, endpoint.key, room_id, self._owner, position, self._lease_end(), skipped
        )

    def _lease_end(self, start: datetime | None = None) -> datetime:
        """When a lease taken or renewed at `start` (now) runs out."""
        return (start or datetime.now(UTC)) + timedelta(seconds=self._settings.webhook_lease_seconds)

    async def _post(self, endpoint: Endpoint, payload: dict[str, Any]) -> Outcome:
        body = orjson.dumps(payload)
        timestamp = int(time.time())
        headers = [
            *endpoint.headers,
            (b"content-length", str(len(body)).encode()),
            (b"x-chat-webhook-id", payload["id"].encode()),
            (b"x-chat-timestamp", str(timestamp).encode()),
            (b"x-chat-signature", sign(self._settings.webhook_secrets, timestamp, body).encode()),
        ]
        try:
            async with asyncio.timeout(self._settings.webhook_timeout_seconds):
                async with self._pool.stream(b"POST", endpoint.target, headers=headers, content=body) as response:
                    read = 0
                    async for chunk in response.aiter_stream():
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break
                    status = response.status
        except (TimeoutError, httpcore.TimeoutException):
            return Outcome(False, "timed out")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as error:
            return Outcome(False, f"{type(error).__name__}: {str(error)[:200]}")
        if 200 <= status < 300:
            return Outcome(True)
        if status in (408, 429) or status >= 500:
            return Outcome(False, f"HTTP {status}")
        return Outcome(True, f"HTTP {status}")
