"""The webhooks' outbox: each endpoint's position in each room's log, the lease of the one process
delivering a room to an endpoint, and the next event's retry state (tables `webhook_endpoints`
and `webhook_deliveries`, migration 0009_webhooks).

No event is copied: the events are the room's log (db.room_events), committed with the change
each records, so whatever commits is delivered, whatever happens to a process afterwards.

A lease is a conditional UPDATE: a process takes a row whose lease is free or ran out, and every
later write of its own names it (`lease_owner`), so a process whose lease was taken over writes
nothing more. Leases are timestamps of the processes' clocks (kept in step by NTP); a lease is
far longer than one delivery's timeout (core.settings), so a holder never sees its lease run out
while it still waits on an answer.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from databases import Database
from sqlalchemy.dialects import postgresql, sqlite

from db.pool import fetch_rows
from db.records import Row, as_row
from db.tables import (
    Id,
    memberships,
    messages,
    reactions,
    room_events,
    rooms,
    users,
    webhook_deliveries,
    webhook_endpoints,
)

MAX_IN_LIST = 10_000
# What a delivery says of a message (db.webhooks.page reads them as `message_<name>`).
MESSAGE_FIELDS = ("id", "sender_id", "body", "created_at", "edited_at", "deleted_at", "kind")
ERROR_CHARS = 500

_d = webhook_deliveries


def _insert(db: Database, table: sa.Table) -> Any:
    """An INSERT that can take ON CONFLICT DO NOTHING, in the database's own dialect."""
    return (sqlite if db.url.dialect == "sqlite" else postgresql).insert(table)


async def register(db: Database, key: str, label: str, at: datetime) -> bool:
    """Record the endpoint once: with it, every room's position at its log's head (the endpoint
    hears what happens from now on). True when this call registered it. Two processes starting
    at once: the second's insert waits on the first's (the primary key) and does nothing, so no
    process delivers before the positions exist."""
    async with db.transaction():
        inserted = await db.fetch_val(
            _insert(db, webhook_endpoints)
            .values(key=key, label=label, created_at=at)
            .on_conflict_do_nothing()
            .returning(webhook_endpoints.c.key)
        )
        if inserted is None:
            return False
        await db.execute(
            _d.insert().from_select(
                ["endpoint", "room_id", "delivered_seq"],
                sa.select(sa.literal(key), rooms.c.id, rooms.c.last_event_seq).where(rooms.c.last_event_seq > 0),
            )
        )
    return True


def _pending(key: str) -> tuple[sa.FromClause, sa.ColumnElement[bool]]:
    """Rooms, each with its row for `key` (or none), and the condition: undelivered events."""
    joined = rooms.outerjoin(_d, sa.and_(_d.c.room_id == rooms.c.id, _d.c.endpoint == key))
    return joined, rooms.c.last_event_seq > sa.func.coalesce(_d.c.delivered_seq, 0)


async def due(db: Database, key: str, at: datetime, limit: int) -> list[int]:
    """Rooms with an event not yet delivered to the endpoint, neither leased nor waiting for a
    retry: those waiting longest first. One scan of `rooms` (a poll's cost grows with rooms)."""
    joined, pending = _pending(key)
    query = (
        sa.select(rooms.c.id)
        .select_from(joined)
        .where(
            pending,
            sa.or_(_d.c.lease_until.is_(None), _d.c.lease_until < at),
            sa.or_(_d.c.next_attempt_at.is_(None), _d.c.next_attempt_at <= at),
        )
        .order_by(_d.c.next_attempt_at.asc().nulls_first())
        .limit(limit)
    )
    return [row["id"] for row in await fetch_rows(db, query)]


_CLAIMED = (_d.c.delivered_seq, _d.c.attempts, _d.c.failing_since)


async def claim(db: Database, key: str, room_id: int, owner: str, at: datetime, until: datetime) -> Row | None:
    """Take the room's lease for the endpoint when it is free (or ran out) and no retry is
    waiting: its row (`delivered_seq`, `attempts`, `failing_since`), or None. One statement,
    also when it fails (a room held by another process: most of a busy room's attempts). A room
    without a row gets one at position 0 (it was made after the endpoint was registered)."""
    free = sa.and_(
        sa.or_(_d.c.lease_until.is_(None), _d.c.lease_until < at),
        sa.or_(_d.c.next_attempt_at.is_(None), _d.c.next_attempt_at <= at),
    )
    take = (
        _insert(db, _d)
        .values(endpoint=key, room_id=room_id, delivered_seq=0, lease_owner=owner, lease_until=until)
        .on_conflict_do_update(
            index_elements=[_d.c.endpoint, _d.c.room_id], set_={"lease_owner": owner, "lease_until": until}, where=free
        )
        .returning(*_CLAIMED)
    )
    try:
        return as_row(await db.fetch_one(take))
    except Exception as error:
        if type(error).__name__ in ("ForeignKeyViolationError", "IntegrityError"):
            return None  # no such room (deleted)
        raise


def _held(key: str, room_id: int, owner: str) -> sa.ColumnElement[bool]:
    """The room's row for the endpoint, while `owner` holds its lease (a change it makes after
    losing the lease writes nothing)."""
    return sa.and_(_d.c.endpoint == key, _d.c.room_id == room_id, _d.c.lease_owner == owner)


async def advance(
    db: Database, key: str, room_id: int, owner: str, seq: int, until: datetime, skipped: tuple[str, datetime] | None
) -> bool:
    """Event `seq` is done (acknowledged, or `skipped` with why and when): the position moves to
    it and the lease is renewed. False when the lease is no longer this owner's (taken over
    after running out): the caller stops."""
    values: dict[str, Any] = {
        "delivered_seq": seq,
        "attempts": 0,
        "failing_since": None,
        "next_attempt_at": None,
        "lease_until": until,
    }
    if skipped is not None:
        values["last_error"], values["last_error_at"] = skipped[0][:ERROR_CHARS], skipped[1]
    query = _d.update().where(_held(key, room_id, owner)).values(**values).returning(_d.c.delivered_seq)
    return await db.fetch_val(query) is not None


async def renew(db: Database, key: str, room_id: int, owner: str, until: datetime) -> bool:
    """The lease renewed to `until`, nothing else written (an event's retry state stays as it
    is). False when it is no longer this owner's: the caller stops."""
    query = _d.update().where(_held(key, room_id, owner)).values(lease_until=until).returning(_d.c.delivered_seq)
    return await db.fetch_val(query) is not None


async def failed(
    db: Database,
    key: str,
    room_id: int,
    owner: str,
    *,
    position: int,
    attempts: int,
    failing_since: datetime,
    next_attempt_at: datetime,
    error: str,
    at: datetime,
) -> None:
    """Every event up to `position` is done, the next one failed again: retried at
    `next_attempt_at` (by whichever process takes the lease then); the lease is given up now."""
    await db.execute(
        _d.update()
        .where(_held(key, room_id, owner))
        .values(
            delivered_seq=position,
            attempts=attempts,
            failing_since=failing_since,
            next_attempt_at=next_attempt_at,
            last_error=error[:ERROR_CHARS],
            last_error_at=at,
            lease_owner=None,
            lease_until=None,
        )
    )


async def release(db: Database, key: str, room_id: int, owner: str, position: int | None = None) -> None:
    """The lease given up (with `position`: every event up to it done)."""
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
    if position is not None:
        values |= {"delivered_seq": position, "attempts": 0, "failing_since": None, "next_attempt_at": None}
    await db.execute(_d.update().where(_held(key, room_id, owner)).values(**values))


async def release_all(db: Database, owner: str) -> None:
    """Every lease `owner` holds, given up (a process stopping: others take its rooms now rather
    than when the leases run out)."""
    await db.execute(_d.update().where(_d.c.lease_owner == owner).values(lease_owner=None, lease_until=None))


async def head(db: Database, room_id: int) -> int | None:
    """The seq of the room's newest event (None: no such room)."""
    return await db.fetch_val(sa.select(rooms.c.last_event_seq).where(rooms.c.id == room_id))


async def page(db: Database, room_id: int, after: int, limit: int) -> list[Row]:
    """The room (`external_id`, `kind`, its log's head `last_event_seq`) with its next `limit`
    events after `after`, in one statement: a row per event, oldest first, each with the room's
    columns, the event's (`seq`, `kind`, `at`, `data`, `user_id`), the external ids of its user
    and its message's sender (`user_external_id`, `sender_external_id`, as stored), its message
    as it is now (`message_*`, `message_reacted`: whether it has any reaction); one row with the
    event's columns null when there is none after `after`, and no row when there is no such room."""
    return await fetch_rows(db, _page(), {"room_id": room_id, "after": after, "limit": limit})


@cache
def _page() -> sa.Select:
    subject, sender = users.alias("subject"), users.alias("sender")
    reacted = sa.exists().where(reactions.c.message_id == messages.c.id)
    events = (
        sa.select(
            room_events.c.seq,
            room_events.c.kind,
            room_events.c.at,
            room_events.c.data,
            room_events.c.user_id,
            subject.c.external_id.label("user_external_id"),
            *(messages.c[name].label(f"message_{name}") for name in MESSAGE_FIELDS),
            reacted.label("message_reacted"),
            sender.c.external_id.label("sender_external_id"),
        )
        .select_from(
            room_events.outerjoin(subject, subject.c.id == room_events.c.user_id)
            .outerjoin(messages, messages.c.id == room_events.c.message_id)
            .outerjoin(sender, sender.c.id == messages.c.sender_id)
        )
        .where(
            room_events.c.room_id == sa.bindparam("room_id", type_=Id),
            room_events.c.seq > sa.bindparam("after", type_=sa.Integer),
        )
        .order_by(room_events.c.seq)
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .subquery()
    )
    return (
        sa.select(
            rooms.c.external_id.label("room_external_id"),
            rooms.c.kind.label("room_kind"),
            rooms.c.last_event_seq,
            *events.c,
        )
        .select_from(rooms.outerjoin(events, sa.true()))
        .where(rooms.c.id == sa.bindparam("room_id", type_=Id))
        .order_by(events.c.seq)
    )


async def external_ids(db: Database, user_ids: list[int]) -> dict[int, str | None]:
    """Each user's external id (None for this service's own accounts, the service's user and a
    deleted user's tombstone among them: their ids hold a control character no host id does);
    unknown users absent."""
    found: dict[int, str | None] = {}
    for start in range(0, len(user_ids), MAX_IN_LIST):
        query = sa.select(users.c.id, users.c.external_id).where(users.c.id.in_(user_ids[start : start + MAX_IN_LIST]))
        found.update({row["id"]: host_id(row["external_id"]) for row in await fetch_rows(db, query)})
    return found


def host_id(value: str | None) -> str | None:
    """A user's external id as a delivery names it: None for this service's own accounts."""
    return value if value is not None and value.isprintable() else None


async def members(db: Database, room_id: int, limit: int) -> list[Row]:
    """The room's members now (`id`, `external_id`), the longest-standing first, at most `limit`."""
    query = (
        sa.select(users.c.id, users.c.external_id)
        .select_from(memberships.join(users, users.c.id == memberships.c.user_id))
        .where(memberships.c.room_id == room_id)
        .order_by(memberships.c.joined_at, memberships.c.user_id)
        .limit(limit)
    )
    return await fetch_rows(db, query)


async def status(db: Database, endpoints: dict[str, str]) -> list[Row]:
    """For each endpoint (key -> label, in that order): `backlog` (events not yet delivered,
    across rooms), `rooms` (rooms with any), `oldest_at` (when the oldest of them happened),
    `failing` (rooms whose next event has failed at least once), `last_error` and
    `last_error_at`. One scan of `rooms` per endpoint: an operator's query, not a hot path."""
    found = []
    for key, label in endpoints.items():
        joined, pending = _pending(key)
        position = sa.func.coalesce(_d.c.delivered_seq, 0)
        backlog = sa.select(
            sa.func.coalesce(sa.func.sum(rooms.c.last_event_seq - position), 0).label("backlog"),
            sa.func.count().label("rooms"),
            sa.func.count().filter(_d.c.attempts > 0).label("failing"),
            sa.func.min(room_events.c.at).label("oldest_at"),
        ).select_from(
            joined.outerjoin(
                room_events, sa.and_(room_events.c.room_id == rooms.c.id, room_events.c.seq == position + 1)
            )
        )
        totals = as_row(await db.fetch_one(backlog.where(pending)))
        assert totals is not None
        last = as_row(
            await db.fetch_one(
                sa.select(_d.c.last_error, _d.c.last_error_at)
                .where(_d.c.endpoint == key, _d.c.last_error_at.is_not(None))
                .order_by(_d.c.last_error_at.desc())
                .limit(1)
            )
        )
        oldest = totals["oldest_at"]
        if isinstance(oldest, str):  # SQLite's MIN() of a timestamp is its text
            oldest = datetime.fromisoformat(oldest)
        found.append(
            {
                "key": key,
                "label": label,
                "backlog": int(totals["backlog"]),
                "rooms": int(totals["rooms"]),
                "failing": int(totals["failing"]),
                "oldest_at": oldest,
                "last_error": last["last_error"] if last else None,
                "last_error_at": last["last_error_at"] if last else None,
            }
        )
    return found


def endpoint_key(url: str) -> str:
    """How an endpoint is known in the tables: a hash of its URL (which may carry a credential)."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def endpoint_label(url: str) -> str:
    """What an operator is shown of an endpoint: its scheme, host, port and path."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
