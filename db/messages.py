"""Messages, numbered per room without gaps, and what happens to them: edits, deletes.

The number comes from `rooms.last_seq`, incremented in the same transaction as the insert:
the row lock serializes concurrent writers in a room, so a committed message N implies that
every message before N in that room has committed too. The same transaction appends the
message's event to the room's log (db.room_events). An edit or a delete is an event on the log
too; a deleted message keeps its place, its body emptied.
"""

import sqlalchemy as sa
from databases import Database

from db import room_events
from db.pool import fetch_rows
from db.records import Row, as_row, now
from db.tables import memberships, messages, reactions, rooms, users

MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.room_id,
    messages.c.seq,
    messages.c.sender_id,
    messages.c.body,
    messages.c.created_at,
    messages.c.edited_at,
    messages.c.deleted_at,
)


class Refused(Exception):
    """A change to a message that may not be made: `reason` is "not_found", "not_sender",
    "not_member" or "deleted"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def create_message(db: Database, room_id: int, sender: Row, body: str) -> room_events.Event | None:
    """The new message's `message_created` event (the message, with its sender, in it); None
    when the sender is not a member of such a room. The statement that counts the sender's own
    messages (for unread counts) is the membership check."""
    async with db.transaction():
        sender_seq = await db.fetch_val(
            memberships.update()
            .where(memberships.c.room_id == room_id, memberships.c.user_id == sender["id"])
            .values(own_count=memberships.c.own_count + 1)
            .returning(memberships.c.own_count)
        )
        if sender_seq is None:
            return None
        numbers = as_row(
            await db.fetch_one(
                rooms.update()
                .where(rooms.c.id == room_id)
                .values(last_seq=rooms.c.last_seq + 1, last_event_seq=rooms.c.last_event_seq + 1)
                .returning(*room_events.ROOM_COUNTER_COLUMNS)
            )
        )
        assert numbers is not None
        seq, event_seq = int(numbers["last_seq"]), int(numbers["last_event_seq"])
        room = {name: numbers[name] for name in room_events.ROOM_FIELDS}
        created = now()
        message = as_row(
            await db.fetch_one(
                messages.insert()
                .values(room_id=room["id"], seq=seq, sender_id=sender["id"], body=body, created_at=created)
                .values(event_seq=event_seq, sender_seq=int(sender_seq))
                .returning(*MESSAGE_COLUMNS)
            )
        )
        assert message is not None
        await room_events.append(
            db,
            room["id"],
            event_seq,
            room_events.MESSAGE_CREATED,
            created,
            user_id=sender["id"],
            message_id=message["id"],
        )
    message["sender"] = room_events.public_user(sender)
    message["reactions"] = []
    return room_events.event(event_seq, room_events.MESSAGE_CREATED, created, room, user=sender, message=message)


async def edit_message(db: Database, message_id: int, sender: Row, body: str) -> room_events.Event:
    """The `message_edited` event; raises Refused."""
    changes = {"body": body, "edited_at": now()}
    return await _change(db, message_id, sender, changes, room_events.MESSAGE_EDITED)


async def delete_message(db: Database, message_id: int, sender: Row) -> room_events.Event:
    """The `message_deleted` event (its place kept, its body emptied); raises Refused."""
    return await _change(db, message_id, sender, {"body": "", "deleted_at": now()}, room_events.MESSAGE_DELETED)


async def _change(db: Database, message_id: int, sender: Row, changes: dict, kind: str) -> room_events.Event:
    async with db.transaction():
        message = as_row(
            await db.fetch_one(
                messages.update()
                .where(
                    messages.c.id == message_id,
                    messages.c.sender_id == sender["id"],
                    messages.c.deleted_at.is_(None),
                )
                .values(**changes)
                .returning(*MESSAGE_COLUMNS)
            )
        )
        if message is None:
            raise Refused(await _why_not(db, message_id, sender["id"]))
        if not await _is_member(db, message["room_id"], sender["id"]):
            raise Refused("not_member")  # the change is rolled back
        room, seq = await room_events.next_event(db, message["room_id"])
        at = changes.get("edited_at") or changes["deleted_at"]
        await room_events.append(db, room["id"], seq, kind, at, user_id=sender["id"], message_id=message_id)
    message["sender"] = room_events.public_user(sender)
    message["reactions"] = (await room_events.reactions_by_message(db, [message_id])).get(message_id, [])
    return room_events.event(seq, kind, at, room, user=sender, message=message)


async def _why_not(db: Database, message_id: int, user_id: int) -> str:
    row = await db.fetch_one(sa.select(messages.c.sender_id, messages.c.deleted_at).where(messages.c.id == message_id))
    if row is None:
        return "not_found"
    if row[0] != user_id:
        return "not_sender"
    return "deleted"


async def _is_member(db: Database, room_id: int, user_id: int) -> bool:
    query = sa.select(memberships.c.room_id).where(memberships.c.room_id == room_id, memberships.c.user_id == user_id)
    return await db.fetch_one(query) is not None


async def message_with_sender(db: Database, message_id: int) -> Row | None:
    """A message as events carry it: its sender and its reactions beside it."""
    query = (
        sa.select(*MESSAGE_COLUMNS, users.c.name, users.c.email_hash)
        .select_from(messages.join(users, users.c.id == messages.c.sender_id))
        .where(messages.c.id == message_id)
    )
    row = as_row(await db.fetch_one(query))
    if row is None:
        return None
    row["sender"] = {"id": row["sender_id"], "name": row.pop("name"), "email_hash": row.pop("email_hash")}
    row["reactions"] = (await room_events.reactions_by_message(db, [message_id])).get(message_id, [])
    return row


async def react(
    db: Database, message_id: int, user: Row, emoji: str, *, added: bool, max_distinct: int
) -> room_events.Event | None:
    """The `reaction_changed` event; None when nothing changed (reacting twice, or taking back
    what was not there). Raises Refused, or TooManyReactions past `max_distinct` emoji."""
    async with db.transaction():
        message = await message_with_sender(db, message_id)
        if message is None:
            raise Refused("not_found")
        if message["deleted_at"] is not None:
            raise Refused("deleted")
        if not await _is_member(db, message["room_id"], user["id"]):
            raise Refused("not_member")
        mine = (reactions.c.message_id == message_id, reactions.c.user_id == user["id"], reactions.c.emoji == emoji)
        exists = await db.fetch_one(sa.select(reactions.c.emoji).where(*mine)) is not None
        if exists == added:
            return None
        if added:
            present = {reaction["emoji"] for reaction in message["reactions"]}
            if emoji not in present and len(present) >= max_distinct:
                raise TooManyReactions(max_distinct)
            await db.execute(
                reactions.insert().values(message_id=message_id, user_id=user["id"], emoji=emoji, created_at=now())
            )
        else:
            await db.execute(reactions.delete().where(*mine))
        room, seq = await room_events.next_event(db, message["room_id"])
        at = now()
        data = {"emoji": emoji, "added": added}
        await room_events.append(
            db, room["id"], seq, room_events.REACTION_CHANGED, at, user_id=user["id"], message_id=message_id, data=data
        )
    message["reactions"] = (await room_events.reactions_by_message(db, [message_id])).get(message_id, [])
    return room_events.event(seq, room_events.REACTION_CHANGED, at, room, user=user, message=message, data=data)


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
