"""Messages, numbered per room without gaps, and what happens to them: edits, deletes.

The number comes from `rooms.last_seq`, incremented in the same transaction as the insert:
the row lock serializes concurrent writers in a room, so a committed message N implies that
every message before N in that room has committed too. The same transaction appends the
message's event to the room's log (db.room_events). An edit or a delete is an event on the log
too; a deleted message keeps its place, its body emptied.
"""

from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any, cast

import sqlalchemy as sa
from databases import Database
from sqlalchemy.dialects import postgresql, sqlite

from db import room_events
from db.ids import new_id
from db.pool import fetch_rows
from db.records import ReadOnlyRow, Row, RowView, as_row, as_rows, now
from db.tables import memberships, messages, reactions, rooms, users
from db.users import PUBLIC_COLUMNS as USER_COLUMNS

MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.room_id,
    messages.c.seq,
    messages.c.sender_id,
    messages.c.body,
    messages.c.created_at,
    messages.c.edited_at,
    messages.c.deleted_at,
    messages.c.kind,
)

USER, SYSTEM = "USER", "SYSTEM"


class Refused(Exception):
    """A change to a message that may not be made: `reason` is "not_found", "not_sender",
    "not_member", "muted" or "deleted"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def create_message(db: Database, room_id: int, sender: Row, body: str) -> room_events.Event | None:
    """The new message's `message_created` event (the message, with its sender, in it); None
    when the sender is not a member of such a room, or is muted in it. The statement that counts
    the sender's own messages (for unread counts) is the membership and mute check."""
    async with db.transaction():
        sender_seq = await db.fetch_val(
            memberships.update()
            .where(memberships.c.room_id == room_id, memberships.c.user_id == sender["id"], _not_muted())
            .values(own_count=memberships.c.own_count + 1)
            .returning(memberships.c.own_count)
        )
        if sender_seq is None:
            return None
        created = await _numbered(db, room_id, sender, body, sender_seq=int(sender_seq), kind=USER)
        assert created is not None  # the sender's membership holds the room
    return created


async def create_system_message(db: Database, room_id: int, sender: Row, body: str) -> room_events.Event | None:
    """A SYSTEM message from the service's user (no member of the room: nothing of a member's
    is counted), numbered and logged as any message is; None when there is no such room."""
    async with db.transaction():
        return await _numbered(db, room_id, sender, body, sender_seq=0, kind=SYSTEM)


async def _numbered(
    db: Database, room_id: int, sender: Row, body: str, *, sender_seq: int, kind: str
) -> room_events.Event | None:
    """Within the caller's transaction: the room's next message and event numbers taken (its row
    locked until the commit: see the module's docstring), the message stored under them and its
    `message_created` appended to the log; the event, or None when there is no such room."""
    numbers = as_row(
        await db.fetch_one(
            rooms.update()
            .where(rooms.c.id == room_id)
            .values(last_seq=rooms.c.last_seq + 1, last_event_seq=rooms.c.last_event_seq + 1)
            .returning(*room_events.ROOM_COUNTER_COLUMNS)
        )
    )
    if numbers is None:
        return None
    seq, event_seq = int(numbers["last_seq"]), int(numbers["last_event_seq"])
    room = {name: numbers[name] for name in room_events.ROOM_FIELDS}
    created = now()
    message = as_row(
        await db.fetch_one(
            messages.insert()
            .values(id=new_id(), room_id=room_id, seq=seq, sender_id=sender["id"], body=body, created_at=created)
            .values(event_seq=event_seq, sender_seq=sender_seq, kind=kind)
            .returning(*MESSAGE_COLUMNS)
        )
    )
    assert message is not None
    await room_events.append(
        db, room_id, event_seq, room_events.MESSAGE_CREATED, created, user_id=sender["id"], message_id=message["id"]
    )
    message["sender"] = room_events.public_user(sender)
    message["reactions"] = []
    return room_events.event(event_seq, room_events.MESSAGE_CREATED, created, room, user=sender, message=message)


# The most messages one transaction of an erasure tombstones (each with its event): a user with
# a hundred thousand messages makes as many small transactions, and as many bounded publishes.
ERASE_BATCH = 200


async def rooms_with_messages_of(db: Database, user_id: int) -> list[int]:
    """The rooms where the user has messages not deleted yet (one scan: no index leads with the
    sender; each room's are then found through ix_messages_room_sender_seq)."""
    query = (
        sa.select(messages.c.room_id)
        .where(messages.c.sender_id == user_id, messages.c.deleted_at.is_(None))
        .group_by(messages.c.room_id)
        .order_by(messages.c.room_id)
    )
    return [int(row["room_id"]) for row in await fetch_rows(db, query)]


async def erase_next(
    db: Database, room_id: int, user_id: int, by: Row, limit: int = ERASE_BATCH
) -> list[room_events.Event]:
    """The user's oldest `limit` messages in the room not deleted yet become tombstones, each
    with its `message_deleted` event (`user`: `by`), as deleteMessage's are, in one transaction:
    their events in log order (none: the room has no more; fewer than `limit` proves nothing,
    as a moderator may have deleted some of the batch meanwhile).

    Two erasures of the user at once (the host asking again while its first call runs) take
    their batches in turn: on Postgres each batch's transaction first takes an advisory lock of
    the user's (`_erasing`), so the batch is chosen after the other's commit; without it, a
    statement that waited on the other's rows found them deleted and answered none, and its call
    took the room for done while messages were left. On SQLite the batch's UPDATE is the
    transaction's first statement, so it takes the database's write lock (which spans processes)
    before it reads anything. Either way an empty batch means none left: every earlier batch of
    any call has committed, with its events."""
    at = now()
    oldest = (
        sa.select(messages.c.id)
        .where(messages.c.room_id == room_id, messages.c.sender_id == user_id, messages.c.deleted_at.is_(None))
        .order_by(messages.c.seq)
        .limit(limit)
    )
    async with db.transaction():
        if db.url.dialect == "postgresql":
            await db.execute(_erasing(user_id))
        # The messages first, then the room's row, in the order deleteMessage takes them.
        rows = await db.fetch_all(
            messages.update()
            .where(messages.c.id.in_(oldest.scalar_subquery()), messages.c.deleted_at.is_(None))
            .values(body="", deleted_at=at)
            .returning(*MESSAGE_COLUMNS)
        )
        if not rows:
            return []
        changed = sorted(as_rows(rows), key=lambda message: int(message["seq"]))
        room, first = await _logged(db, room_id, changed, by, room_events.MESSAGE_DELETED, at)
    return await _events(db, room, first, room_events.MESSAGE_DELETED, at, by, changed)


# The first key of the erasures' advisory locks (pg_advisory_xact_lock(int4, int4)); the second
# is the user's id folded to 32 bits: two users sharing one only take their batches in turn.
ERASING_LOCK = 27


def _erasing(user_id: int) -> sa.Select:
    """The statement taking the user's erasure lock until the transaction ends (Postgres)."""
    folded = (user_id & 0xFFFFFFFF) - ((user_id & 0x80000000) << 1)
    return sa.select(sa.func.pg_advisory_xact_lock(ERASING_LOCK, folded))


async def edit_message(db: Database, message_id: int, sender: Row, body: str) -> room_events.Event:
    """The `message_edited` event; raises Refused (a muted sender too)."""
    changes = {"body": body, "edited_at": now()}
    mine = (messages.c.sender_id == sender["id"], _is_member_of_its_room(sender["id"], unmuted=True))
    return await _change(db, message_id, sender, changes, room_events.MESSAGE_EDITED, mine)


async def delete_message(
    db: Database, message_id: int, deleter: Row, *, moderating: tuple[str, ...] = ()
) -> room_events.Event:
    """The `message_deleted` event (its place kept, its body emptied; its `user` is who deleted
    it); raises Refused. With `moderating` (roles), a member of the message's room in one of
    those roles deletes anyone's message, checked in the statement that deletes it."""
    if moderating:
        who: tuple[sa.ColumnElement[bool], ...] = (_is_member_of_its_room(deleter["id"], roles=moderating),)
    else:
        who = (messages.c.sender_id == deleter["id"], _is_member_of_its_room(deleter["id"]))
    changes = {"body": "", "deleted_at": now()}
    return await _change(db, message_id, deleter, changes, room_events.MESSAGE_DELETED, who)


async def _change(
    db: Database, message_id: int, actor: Row, changes: dict, kind: str, who: tuple[sa.ColumnElement[bool], ...]
) -> room_events.Event:
    async with db.transaction():
        message = as_row(
            await db.fetch_one(
                messages.update()
                .where(messages.c.id == message_id, messages.c.deleted_at.is_(None), *who)
                .values(**changes)
                .returning(*MESSAGE_COLUMNS)
            )
        )
        if message is None:
            raise Refused(await _why_not(db, message_id, actor["id"]))
        at = changes.get("edited_at") or changes["deleted_at"]
        room, seq = await _logged(db, message["room_id"], [message], actor, kind, at)
    [changed] = await _events(db, room, seq, kind, at, actor, [message])
    return changed


async def _logged(db: Database, room_id: int, changed: list[Row], actor: Row, kind: str, at: Any) -> tuple[Row, int]:
    """Log one event of `kind` by `actor` per changed message of the room, in the list's order,
    inside the transaction that changed them: the room and the first event's seq. The messages'
    reactions are read after the room's row is locked for the seqs, as in `react`."""
    room, last = await room_events.next_event(db, room_id, len(changed))
    first = last - len(changed) + 1
    ids = [int(message["id"]) for message in changed]
    found = await room_events.reactions_by_message(db, ids)
    for message in changed:
        message["reactions"] = found.get(int(message["id"]), [])
    if len(changed) == 1:
        await room_events.append(db, room_id, first, kind, at, user_id=actor["id"], message_id=ids[0])
    else:
        await room_events.append_for_messages(db, room_id, first, kind, at, actor["id"], ids)
    return room, first


async def _events(
    db: Database, room: Row, first: int, kind: str, at: Any, actor: Row, changed: list[Row]
) -> list[room_events.Event]:
    """The logged events (seqs from `first` on) as they are published: each message with its
    sender."""
    others = sorted({int(message["sender_id"]) for message in changed} - {int(actor["id"])})
    senders = {int(actor["id"]): room_events.public_user(actor)}
    if others:
        rows = await fetch_rows(db, sa.select(*SENDER_COLUMNS).where(users.c.id.in_(others)))
        senders |= {int(row["id"]): room_events.public_user(row) for row in rows}
    events = []
    for n, message in enumerate(changed):
        message["sender"] = senders[int(message["sender_id"])]
        events.append(room_events.event(first + n, kind, at, room, user=actor, message=message))
    return events


SENDER_COLUMNS = (users.c.id, users.c.name, users.c.email_hash, users.c.avatar_url, users.c.gravatar)


async def _why_not(db: Database, message_id: int, user_id: int) -> str:
    row = await db.fetch_one(sa.select(messages.c.sender_id, messages.c.deleted_at).where(messages.c.id == message_id))
    if row is None:
        return "not_found"
    membership = await db.fetch_one(
        sa.select(memberships.c.muted_until).where(
            memberships.c.room_id == sa.select(messages.c.room_id).where(messages.c.id == message_id).scalar_subquery(),
            memberships.c.user_id == user_id,
        )
    )
    if membership is None:
        return "not_member"
    if row[1] is not None:
        return "deleted"
    if row[0] != user_id:
        return "not_sender"
    return "muted"


def _not_muted() -> sa.ColumnElement[bool]:
    """Of a membership: no mute stands now."""
    return sa.or_(
        memberships.c.muted_until.is_(None),
        memberships.c.muted_until <= sa.bindparam("muted_now", now(), type_=memberships.c.muted_until.type),
    )


def _is_member_of_its_room(
    user_id: int, *, unmuted: bool = False, roles: tuple[str, ...] = ()
) -> sa.ColumnElement[bool]:
    """Whether `user_id` is a member of the room of the message the statement is about (not
    muted, or in one of `roles`, when asked)."""
    membership = sa.select(memberships.c.room_id).where(
        memberships.c.room_id == messages.c.room_id, memberships.c.user_id == user_id
    )
    if unmuted:
        membership = membership.where(_not_muted())
    if roles:
        membership = membership.where(memberships.c.role.in_(roles))
    return membership.exists()


def _with_sender(viewer_id: int | None = None) -> sa.Select:
    """A message with its sender's public columns; with `viewer_id`, whether that user is a
    member of its room too (one round trip for a change's checks)."""
    columns: list[Any] = [*MESSAGE_COLUMNS, users.c.name, users.c.email_hash]
    if viewer_id is not None:
        columns.append(_is_member_of_its_room(viewer_id).label("member"))
        columns.append(_is_member_of_its_room(viewer_id, unmuted=True).label("unmuted"))
    return sa.select(*columns).select_from(messages.join(users, users.c.id == messages.c.sender_id))


def _sender_apart(row: Row) -> Row:
    row["sender"] = {"id": row["sender_id"], "name": row.pop("name"), "email_hash": row.pop("email_hash")}
    return row


async def message_with_sender(db: Database, message_id: int) -> Row | None:
    """A message as events carry it: its sender and its reactions beside it."""
    row = as_row(await db.fetch_one(_with_sender().where(messages.c.id == message_id)))
    if row is None:
        return None
    row = _sender_apart(row)
    row["reactions"] = (await room_events.reactions_by_message(db, [message_id])).get(message_id, [])
    return row


async def react(
    db: Database, message_id: int, user: Row, emoji: str, *, added: bool, max_distinct: int
) -> room_events.Event | None:
    """The `reaction_changed` event; None when nothing changed (reacting twice, or taking back
    what was not there). Raises Refused, or TooManyReactions past `max_distinct` emoji.

    The event's reactions are read after the room's row is locked for its seq: every earlier
    event's change has committed by then and no later one has, so they are the reactions as of
    this event's place in the log."""
    async with db.transaction():
        # FOR SHARE: an edit or a delete of the message waits for this transaction, so the
        # message this event carries is the message as of its place in the log.
        query = _with_sender(user["id"]).where(messages.c.id == message_id).with_for_update(read=True, of=messages)
        message = as_row(await db.fetch_one(query))
        if message is None:
            raise Refused("not_found")
        if message["deleted_at"] is not None:
            raise Refused("deleted")
        if not message.pop("member"):
            raise Refused("not_member")
        if not message.pop("unmuted"):
            raise Refused("muted")
        mine = (reactions.c.message_id == message_id, reactions.c.user_id == user["id"], reactions.c.emoji == emoji)
        if added:
            values = {"message_id": message_id, "user_id": user["id"], "emoji": emoji, "created_at": now()}
            change: Any = _insert_or_nothing(db, reactions).values(**values).on_conflict_do_nothing()
        else:
            change = reactions.delete().where(*mine)
        if await db.fetch_val(change.returning(reactions.c.emoji)) is None:
            return None
        room, seq = await room_events.next_event(db, message["room_id"])
        standing = (await room_events.reactions_by_message(db, [message_id])).get(message_id, [])
        if added and len(standing) > max_distinct and _count(standing, emoji) == 1:
            raise TooManyReactions(max_distinct)  # a new emoji past the limit: all rolled back
        at = now()
        data = {"emoji": emoji, "added": added}
        await room_events.append(
            db, room["id"], seq, room_events.REACTION_CHANGED, at, user_id=user["id"], message_id=message_id, data=data
        )
    message = _sender_apart(message)
    message["reactions"] = standing
    return room_events.event(seq, room_events.REACTION_CHANGED, at, room, user=user, message=message, data=data)


def _count(standing: list[dict[str, Any]], emoji: str) -> int:
    return next((reaction["count"] for reaction in standing if reaction["emoji"] == emoji), 0)


def _insert_or_nothing(db: Database, table: sa.Table) -> Any:
    """An INSERT that can take ON CONFLICT DO NOTHING, in the database's own dialect (Postgres
    and SQLite spell it alike, SQLAlchemy builds it per dialect)."""
    return (sqlite if db.url.dialect == "sqlite" else postgresql).insert(table)


class TooManyReactions(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def newest_first(db: Database, room_ids: list[int], limit: int, before_seq: int | None) -> dict[int, list[Row]]:
    """A page of history for each room, newest first, strictly before `before_seq` when given:
    one query for all the rooms (a window over each room's messages)."""
    position = sa.func.row_number().over(partition_by=messages.c.room_id, order_by=messages.c.seq.desc())
    inner = sa.select(*MESSAGE_COLUMNS, position.label("position")).where(messages.c.room_id.in_(room_ids))
    if before_seq is not None:
        inner = inner.where(messages.c.seq < before_seq)
    ranked = inner.subquery()
    query = (
        sa.select(*(ranked.c[column.name] for column in MESSAGE_COLUMNS))
        .where(ranked.c.position <= limit)
        .order_by(ranked.c.room_id, ranked.c.seq.desc())
    )
    pages: dict[int, list[Row]] = {room_id: [] for room_id in room_ids}
    for row in await fetch_rows(db, query):
        pages[row["room_id"]].append(row)
    return pages


# The sender's public columns beside a message's, under these names (split off by `_with_sender_row`;
# not `sender_id`, a message's own column).
_SENDER_LABELS = tuple((f"sender__{column.name}", column.name) for column in USER_COLUMNS)


@cache
def _last_messages() -> sa.Select:
    """Each room's newest message: the one at its `last_seq` (messages are numbered without gaps,
    and a deleted one keeps its place), found by the unique (room, seq) index, not by ranking
    the room's history; with its sender's public columns."""
    newest = newest_of_room()
    return (
        sa.select(
            *MESSAGE_COLUMNS,
            *(column.label(label) for column, (label, _) in zip(USER_COLUMNS, _SENDER_LABELS, strict=True)),
        )
        .select_from(rooms.join(messages, newest).join(users, users.c.id == messages.c.sender_id))
        .where(rooms.c.id.in_(sa.bindparam("room_ids", expanding=True)))
    )


def _with_sender_row(row: Row) -> Row:
    row["sender"] = {name: row.pop(label) for label, name in _SENDER_LABELS}
    return row


# A room's newest message and its sender's public columns read beside the room's own, in the
# room's row (db.rooms.rooms_of_user), under these names: `last_message_of` takes them out.
_LAST_LABELS = tuple((f"last__{column.name}", column.name) for column in MESSAGE_COLUMNS)
_LAST_SENDER_LABELS = tuple((f"last__sender__{column.name}", column.name) for column in USER_COLUMNS)
_LAST_ID = _LAST_LABELS[0][0]
_LAST_SENDER_ID = _LAST_SENDER_LABELS[0][0]
_LAST_NAMES = dict(_LAST_LABELS + _LAST_SENDER_LABELS)  # each label's column name


def last_message_columns() -> tuple[sa.Label, ...]:
    """The newest message's columns, and its sender's, for a statement joining `messages` (at the
    room's `last_seq`) and `users` (its sender) to each room: outer joins, so a room before any
    message reads nulls, and `last_message_of` None."""
    return (
        *(column.label(label) for column, (label, _) in zip(MESSAGE_COLUMNS, _LAST_LABELS, strict=True)),
        *(column.label(label) for column, (label, _) in zip(USER_COLUMNS, _LAST_SENDER_LABELS, strict=True)),
    )


def newest_of_room() -> sa.ColumnElement[bool]:
    """The join condition of a room's newest message (as `_last_messages`' own)."""
    return sa.and_(messages.c.room_id == rooms.c.id, messages.c.seq == rooms.c.last_seq)


def last_message_of(row: RowView) -> Row | None:
    """The newest message read beside a room (`last_message_columns`) as `last_messages` gives
    it, its sender beside it; None before any."""
    if row[_LAST_ID] is None:
        return None
    message = {name: row[label] for label, name in _LAST_LABELS}
    message["sender"] = {name: row[label] for label, name in _LAST_SENDER_LABELS}
    return message


def rooms_and_last_messages(rows: Sequence[RowView]) -> Iterator[tuple[Row, Row | None]]:
    """Each row read beside its newest message (`last_message_columns`, last in the row) as a
    room's own columns, in a dict of their own, and its newest message as `last_message_of`
    gives it. asyncpg's rows are cut by position, the positions found once for the list (a dict
    of each whole row, then two of its message, took twice as long: a room list makes one a room)."""
    if not rows:
        return
    first = rows[0]
    if not isinstance(first, ReadOnlyRow):  # the embedded default's rows are dicts already
        for row in rows:
            yield {key: value for key, value in row.items() if key not in _LAST_NAMES}, last_message_of(row)
        return
    keys = tuple(first.keys())
    at, sender_at = keys.index(_LAST_ID), keys.index(_LAST_SENDER_ID)
    assert all(key in _LAST_NAMES for key in keys[at:]) and not any(key in _LAST_NAMES for key in keys[:at])
    room_keys = keys[:at]
    message_names = tuple(_LAST_NAMES[key] for key in keys[at:sender_at])
    sender_names = tuple(_LAST_NAMES[key] for key in keys[sender_at:])
    for record in cast(Sequence[ReadOnlyRow], rows):
        values = record[:]
        room = dict(zip(room_keys, values, strict=False))  # the first `at` values
        if values[at] is None:
            yield room, None
            continue
        message = dict(zip(message_names, values[at:sender_at], strict=True))
        message["sender"] = dict(zip(sender_names, values[sender_at:], strict=True))
        yield room, message


async def last_messages(db: Database, room_ids: list[int]) -> dict[int, Row]:
    """The newest message of each of these rooms that has one, its sender beside it (`sender`:
    the user's public row): one query for them all, whatever their history's length."""
    if not room_ids:
        return {}
    rows = await fetch_rows(db, _last_messages(), {"room_ids": room_ids})
    return {row["room_id"]: _with_sender_row(row) for row in rows}
