"""A room's event log: every logged event of a room (a message, a join, a leave...) takes the
room's next event seq, in the same transaction as the change it records, so the log has no gap
and its order is the order of commits.

An event is a plain dict, the same whether read here or published live:
`{"seq", "kind", "at", "room", "user", "message", ...the kind's own fields}` where `user` is who
the event is about and `message` the message it concerns (with its sender), or None.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from databases import Database

from db.pool import fetch_rows
from db.records import Row, as_row
from db.tables import messages, reactions, room_events, rooms, users

MESSAGE_CREATED = "message_created"
MESSAGE_EDITED = "message_edited"
MESSAGE_DELETED = "message_deleted"
REACTION_CHANGED = "reaction_changed"
READ_UP_TO = "read_up_to"
MEMBER_JOINED = "member_joined"
MEMBER_LEFT = "member_left"
MEMBER_REMOVED = "member_removed"  # data: `by` (a user id), `banned`
ROLE_CHANGED = "role_changed"  # data: `role`, `by` (a user id, or None: succession)
ROOM_UPDATED = "room_updated"  # user: who; data: the room's `name`, `topic`, `room_kind` after it

Event = dict[str, Any]

MAX_IN_LIST = 10_000

MESSAGE_FIELDS = ("id", "room_id", "seq", "sender_id", "body", "created_at", "edited_at", "deleted_at", "kind")


async def next_seq(db: Database, room_id: int) -> int:
    """The room's next event seq; call inside the transaction that appends the event (the row
    lock on the room serializes its writers)."""
    query = (
        rooms.update()
        .where(rooms.c.id == room_id)
        .values(last_event_seq=rooms.c.last_event_seq + 1)
        .returning(rooms.c.last_event_seq)
    )
    return int(await db.fetch_val(query))


ROOM_COUNTER_COLUMNS = (
    rooms.c.id,
    rooms.c.name,
    rooms.c.last_seq,
    rooms.c.last_event_seq,
)


async def next_event(db: Database, room_id: int, count: int = 1) -> tuple[Row, int]:
    """The room (what does not change of it) and its log's next seq (with `count`, the last of
    its next `count` seqs); call inside the transaction that appends the events."""
    numbers = as_row(
        await db.fetch_one(
            rooms.update()
            .where(rooms.c.id == room_id)
            .values(last_event_seq=rooms.c.last_event_seq + count)
            .returning(*ROOM_COUNTER_COLUMNS)
        )
    )
    assert numbers is not None
    return public_room(numbers), int(numbers["last_event_seq"])


async def append(
    db: Database,
    room_id: int,
    seq: int,
    kind: str,
    at: datetime,
    *,
    user_id: int | None = None,
    message_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    await db.execute(
        room_events.insert().values(
            room_id=room_id,
            seq=seq,
            kind=kind,
            at=at,
            user_id=user_id,
            message_id=message_id,
            data=json.dumps(data, separators=(",", ":")) if data else None,
        )
    )


async def append_for_messages(
    db: Database, room_id: int, first_seq: int, kind: str, at: datetime, user_id: int, message_ids: list[int]
) -> None:
    """One event of `kind` per message, seqs from `first_seq` on in the list's order, in one
    statement (a batch's: keep it to a few hundred rows, as a statement's parameters are bounded)."""
    await db.execute(
        room_events.insert().values(
            [
                {"room_id": room_id, "seq": first_seq + n, "kind": kind, "at": at, "user_id": user_id}
                | {"message_id": message_id, "data": None}
                for n, message_id in enumerate(message_ids)
            ]
        )
    )


# What an event carries of a user besides id, name and email_hash: the rest of what `avatar`
# needs (resolvers/user.py PROFILE_KEYS). With them a live event executes without a database
# read; without, every execution of a selection asking for `avatar` waits on a connection from
# the pool, under the feed's lock or in the lane, and that wait is charged to the group's cost.
PROFILE_FIELDS = ("avatar_url", "gravatar")


def public_user(row: Row) -> dict[str, Any]:
    """What an event carries of a user (never their email or external id); the profile fields
    only when the row has them (a row read without them resolves `avatar` through a loader)."""
    user = {"id": row["id"], "name": row["name"], "email_hash": row["email_hash"]}
    for name in PROFILE_FIELDS:
        if name in row:
            user[name] = row[name]
    return user


ROOM_FIELDS = ("id", "name")  # what Room serves of the row


def public_room(row: Row) -> dict[str, Any]:
    """The room as an event carries it: what does not change, not its counters of the moment."""
    return {name: row[name] for name in ROOM_FIELDS}


def event(
    seq: int,
    kind: str,
    at: datetime,
    room: Row,
    *,
    user: Row | None = None,
    message: Row | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    return {
        **(data or {}),
        "seq": seq,
        "kind": kind,
        "at": at,
        "room": public_room(room),
        "user": public_user(user) if user is not None else None,
        "message": message,
    }


_subject = users.alias("subject")
_sender = users.alias("sender")
_COLUMNS = (
    room_events.c.seq,
    room_events.c.kind,
    room_events.c.at,
    room_events.c.data,
    _subject.c.id.label("user_id"),
    _subject.c.name.label("user_name"),
    _subject.c.email_hash.label("user_email_hash"),
    *(_subject.c[name].label(f"user_{name}") for name in PROFILE_FIELDS),
    *(messages.c[name].label(f"message_{name}") for name in MESSAGE_FIELDS),
    _sender.c.name.label("sender_name"),
    _sender.c.email_hash.label("sender_email_hash"),
    *(_sender.c[name].label(f"sender_{name}") for name in PROFILE_FIELDS),
)
_FROM = (
    room_events.outerjoin(_subject, _subject.c.id == room_events.c.user_id)
    .outerjoin(messages, messages.c.id == room_events.c.message_id)
    .outerjoin(_sender, _sender.c.id == messages.c.sender_id)
)


def _event(row: Row, room: Row) -> Event:
    user = None
    if row["user_id"] is not None:
        user = {"id": row["user_id"], "name": row["user_name"], "email_hash": row["user_email_hash"]}
        user.update((name, row[f"user_{name}"]) for name in PROFILE_FIELDS)
    message = None
    if row["message_id"] is not None:
        message = {name: row[f"message_{name}"] for name in MESSAGE_FIELDS}
        message["sender"] = {
            "id": message["sender_id"],
            "name": row["sender_name"],
            "email_hash": row["sender_email_hash"],
            **{name: row[f"sender_{name}"] for name in PROFILE_FIELDS},
        }
    data = json.loads(row["data"]) if row["data"] else None
    return event(row["seq"], row["kind"], row["at"], room, user=user, message=message, data=data)


async def after(db: Database, room: Row, seq: int, limit: int) -> list[Event]:
    """The room's events after `seq`, oldest first, with the users and messages they concern."""
    query = (
        sa.select(*_COLUMNS)
        .select_from(_FROM)
        .where(room_events.c.room_id == room["id"], room_events.c.seq > seq)
        .order_by(room_events.c.seq)
        .limit(limit)
    )
    return await _events(db, await fetch_rows(db, query), room)


async def after_in_rooms(db: Database, room_ids: list[int], seq: int, limit: int) -> dict[int, list[Event]]:
    """Each room's first `limit` events after `seq`, oldest first, as `after` reads one room's:
    one statement for all the rooms (a window over each room's log), and one more for the
    reactions of all their messages, however many rooms there are."""
    pages: dict[int, list[Event]] = {room_id: [] for room_id in room_ids}
    rows = await fetch_rows(db, _after_in_rooms(), {"room_ids": room_ids, "seq": seq, "limit": limit})
    for row in rows:
        room = {"id": row["room_id"], "name": row["room_name"]}
        pages[row["room_id"]].append(_event(row, room))
    await _with_reactions(db, [event for page in pages.values() for event in page])
    return pages


@cache
def _after_in_rooms() -> sa.Select:
    position = sa.func.row_number().over(partition_by=room_events.c.room_id, order_by=room_events.c.seq)
    ranked = (
        sa.select(
            *_COLUMNS,
            room_events.c.room_id,
            rooms.c.name.label("room_name"),
            position.label("position"),
        )
        .select_from(_FROM.join(rooms, rooms.c.id == room_events.c.room_id))
        .where(
            room_events.c.room_id.in_(sa.bindparam("room_ids", expanding=True)),
            room_events.c.seq > sa.bindparam("seq", type_=sa.Integer),
        )
        .subquery()
    )
    return (
        sa.select(*(column for column in ranked.c if column.name != "position"))
        .where(ranked.c.position <= sa.bindparam("limit", type_=sa.Integer))
        .order_by(ranked.c.room_id, ranked.c.seq)
    )


async def newest(db: Database, room: Row, limit: int) -> list[Event]:
    """The room's last `limit` events, oldest first."""
    query = (
        sa.select(*_COLUMNS)
        .select_from(_FROM)
        .where(room_events.c.room_id == room["id"])
        .order_by(room_events.c.seq.desc())
        .limit(limit)
    )
    return await _events(db, list(reversed(await fetch_rows(db, query))), room)


async def _events(db: Database, rows: list[Row], room: Row) -> list[Event]:
    """Events from their rows; the messages they concern as they are now, reactions included
    (one more read for the whole batch)."""
    events = [_event(row, room) for row in rows]
    await _with_reactions(db, events)
    return events


async def _with_reactions(db: Database, events: list[Event]) -> None:
    """Each event's message given its reactions as they are now: one read for all of them."""
    message_ids = sorted({event["message"]["id"] for event in events if event["message"] is not None})
    if message_ids:
        found = await reactions_by_message(db, message_ids)
        for event in events:
            if event["message"] is not None:
                event["message"]["reactions"] = found.get(event["message"]["id"], [])


def revised(earlier: Event, later: Event) -> Event | None:
    """`earlier` with the message as `later` left it, when both concern the same message: the
    log's events show their message as it is now (deleted text is gone from every replay)."""
    message, changed = earlier.get("message"), later.get("message")
    if message is None or changed is None or message is changed or message["id"] != changed["id"]:
        return None
    return {**earlier, "message": changed}


async def reactions_by_message(db: Database, message_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each message's reactions: `{"emoji", "count", "users"}` (who reacted, for `mine`), by
    emoji in the order of each one's earliest standing reaction."""
    found: dict[int, dict[str, dict[str, Any]]] = {}
    rows: list[Row] = []
    # In chunks: a statement takes at most 32,767 parameters (asyncpg), and a page of events
    # across hundreds of rooms can concern more messages than that.
    for start in range(0, len(message_ids), MAX_IN_LIST):
        query = (
            sa.select(reactions.c.message_id, reactions.c.emoji, reactions.c.user_id)
            .where(reactions.c.message_id.in_(message_ids[start : start + MAX_IN_LIST]))
            .order_by(reactions.c.message_id, reactions.c.created_at, reactions.c.user_id)
        )
        rows += await fetch_rows(db, query)
    for row in rows:
        by_emoji = found.setdefault(row["message_id"], {})
        entry = by_emoji.setdefault(row["emoji"], {"emoji": row["emoji"], "count": 0, "users": []})
        entry["count"] += 1
        entry["users"].append(row["user_id"])
    return {message_id: list(by_emoji.values()) for message_id, by_emoji in found.items()}
