"""What a webhook delivery says of a room event: the JSON body's fields but its `id` (which is
per endpoint, transports.webhooks), built from the room's log (db.room_events) here, where the
log's cursors are made (resolvers.ids), so a delivery's `cursor` is the one the API gives.

The log shows each message as it is now (an edit or a delete since shows in an earlier event's
message too, as a replay through the API does). Users are `{"id", "externalId"}` (the host's
id, null for this service's own accounts). `recipients.offline` (message.created only) is read
when the delivery is attempted: the room's members, but the sender, with no live connection or
stream open anywhere then (live.quota). When Redis does not answer, only this process's
connections are known: everyone else is listed, and `complete` is false (a host may send a push
to someone who was in fact connected; nobody is missed).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from databases import Database

from db import room_events, webhooks
from db.records import Row
from live.quota import LiveQuota
from resolvers.ids import encode_event_cursor

TYPES = {
    room_events.MESSAGE_CREATED: "message.created",
    room_events.MESSAGE_EDITED: "message.edited",
    room_events.MESSAGE_DELETED: "message.deleted",
    room_events.REACTION_CHANGED: "reaction.changed",
    room_events.MEMBER_JOINED: "member.joined",
    room_events.MEMBER_LEFT: "member.left",
    room_events.MEMBER_REMOVED: "member.removed",
    room_events.ROLE_CHANGED: "role.changed",
    room_events.ROOM_UPDATED: "room.updated",
    room_events.READ_UP_TO: "read.updated",
}
# The most members a message.created names as offline (the longest-standing first); past it,
# `complete` is false.
MAX_RECIPIENTS = 5_000
RECIPIENTS_FRESH_SECONDS = 1.0
MAX_CACHED_ROOMS = 1_000
# The most of the pool's connections webhook delivery uses at once (the reads here and the
# dispatcher's, transports.webhooks): in a web worker the pool is the requests' (DATABASE_POOL_MAX),
# and a mutation waiting for a connection a delivery holds is what webhooks would cost posting.
# Delivery reads per page of events, so one is plenty.
DB_CONNECTIONS = 1


def _time(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


# Events that change who is a member: a page holding one reads the members anew for the
# message.created events after it.
MEMBERSHIP_CHANGES = frozenset((room_events.MEMBER_JOINED, room_events.MEMBER_LEFT, room_events.MEMBER_REMOVED))


@dataclass(frozen=True, slots=True)
class Built:
    """One event of a page: what the dispatcher needs of it, and its body (no `id`, no
    `recipients`)."""

    seq: int
    kind: str
    at: datetime | str
    sender_id: int | None  # its message's sender, for a message.created's recipients
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    head: int  # the room's log's newest seq: past the page's last, there is more
    events: list[Built]


class WebhookEvents:
    """Builds deliveries' bodies for one process: its database and its view of who is connected."""

    def __init__(self, db: Database, quota: LiveQuota) -> None:
        self._db = db
        self._quota = quota
        # Taken around every database read or write of webhook delivery (here and the dispatcher's).
        self.connections = asyncio.Semaphore(DB_CONNECTIONS)
        # By room: when read, its members (kept across pages until a change of members in its
        # log, a new lease or RECIPIENTS_FRESH_SECONDS).
        self._members: dict[int, tuple[float, list[Row]]] = {}
        # By room: when read, who of its members is connected and whether that is known
        # everywhere (read anew for each page, as before: a connection comes and goes unlogged).
        self._connected: dict[int, tuple[float, set[int], bool]] = {}

    async def page(self, room_id: int, after: int, limit: int) -> Page | None:
        """The room's log's head and its next `limit` events after `after`, each with its body:
        one read (the room, the events, their users' external ids and messages), one more only
        for messages with reactions and for users an event names in its data (`by`). None when
        there is no such room."""
        self._connected.pop(room_id, None)  # a page's connections are read anew
        async with self.connections:
            rows = await webhooks.page(self._db, room_id, after, limit)
        if not rows:
            return None
        room = rows[0]
        if room["seq"] is None:  # no event after `after`
            return Page(int(room["last_event_seq"]), [])
        externals: dict[int, str | None] = {}
        datas: list[dict[str, Any]] = []
        reacted: list[int] = []
        for row in rows:
            if row["user_id"] is not None:
                externals[int(row["user_id"])] = webhooks.host_id(row["user_external_id"])
            if row["message_id"] is not None:
                externals[int(row["message_sender_id"])] = webhooks.host_id(row["sender_external_id"])
                if row["message_reacted"]:
                    reacted.append(int(row["message_id"]))
            datas.append(orjson.loads(row["data"]) if row["data"] else {})
        named = sorted({int(data["by"]) for data in datas if data.get("by") is not None} - externals.keys())
        found: dict[int, list[dict[str, Any]]] = {}
        if named or reacted:
            async with self.connections:
                if named:
                    externals |= await webhooks.external_ids(self._db, named)
                if reacted:
                    found = await room_events.reactions_by_message(self._db, sorted(set(reacted)))
        about = {"id": str(room_id), "externalId": room["room_external_id"], "kind": room["room_kind"]}

        def user(user_id: Any) -> dict[str, Any] | None:
            if user_id is None:
                return None
            return {"id": str(user_id), "externalId": externals.get(int(user_id))}

        def message(row: Row) -> dict[str, Any]:
            return {
                "id": str(row["message_id"]),
                "kind": row["message_kind"] or "USER",
                "body": row["message_body"],
                "sender": user(row["message_sender_id"]),
                "createdAt": _time(row["message_created_at"]),
                "editedAt": _time(row["message_edited_at"]),
                "deleted": row["message_deleted_at"] is not None,
                "reactions": [{"emoji": r["emoji"], "count": r["count"]} for r in found.get(row["message_id"], ())],
            }

        built = []
        for row, event in zip(rows, datas, strict=True):
            kind = row["kind"]
            subject = user(row["user_id"])
            data: dict[str, Any]
            if kind in (room_events.MESSAGE_CREATED, room_events.MESSAGE_EDITED):
                data = {"message": message(row)}
            elif kind == room_events.MESSAGE_DELETED:
                data = {"messageId": str(row["message_id"]), "by": subject}
            elif kind == room_events.REACTION_CHANGED:
                data = {"message": message(row), "user": subject}
                data |= {"emoji": event.get("emoji"), "added": event.get("added")}
            elif kind == room_events.READ_UP_TO:
                data = {"user": subject, "upTo": encode_event_cursor(room_id, int(event["up_to"]))}
            elif kind == room_events.MEMBER_REMOVED:
                data = {"user": subject, "by": user(event.get("by")), "banned": bool(event.get("banned"))}
            elif kind == room_events.ROLE_CHANGED:
                data = {"user": subject, "role": event.get("role"), "by": user(event.get("by"))}
            elif kind == room_events.ROOM_UPDATED:
                data = {"by": subject, "name": event.get("name"), "topic": event.get("topic")}
                data["kind"] = event.get("room_kind")
            elif kind == room_events.MEMBER_JOINED:
                data = {"user": subject, "by": user(event.get("by"))}
            else:  # member.left, and any kind added later: who it is about
                data = {"user": subject}
            if kind in MEMBERSHIP_CHANGES:
                self._members.pop(room_id, None)  # the messages after it: the members anew
            seq = int(row["seq"])
            body = {
                "type": TYPES.get(kind, kind.replace("_", ".")),
                "room": about,
                "cursor": encode_event_cursor(room_id, seq),
                "at": _time(row["at"]),
                "data": data,
            }
            sender = row["message_sender_id"]
            built.append(Built(seq, kind, row["at"], int(sender) if sender is not None else None, body))
        return Page(int(room["last_event_seq"]), built)

    def forget(self, room_id: int) -> None:
        """The room's members as last read are not used again: its lease was (re)taken, and
        while another process held it, its log may have changed its members."""
        self._members.pop(room_id, None)

    async def recipients(self, room_id: int, event: Built) -> dict[str, Any] | None:
        """`recipients` for a message.created (None for any other event): the members, read
        after every change of members the room's log holds before the event, and who of them
        is connected, read once per page; each at most RECIPIENTS_FRESH_SECONDS before the
        attempt (a busy room's deliveries share the members' read)."""
        if event.kind != room_events.MESSAGE_CREATED or event.sender_id is None:
            return None
        now = time.monotonic()
        known_members = self._members.get(room_id)
        if known_members is None or now - known_members[0] > RECIPIENTS_FRESH_SECONDS:
            async with self.connections:
                found = await webhooks.members(self._db, room_id, MAX_RECIPIENTS + 1)
            if len(self._members) >= MAX_CACHED_ROOMS:
                self._members.clear()
            known_members = self._members[room_id] = (now, found)
            self._connected.pop(room_id, None)  # of these members
        members = known_members[1]
        known_connected = self._connected.get(room_id)
        if known_connected is None or now - known_connected[0] > RECIPIENTS_FRESH_SECONDS:
            connected, known = await self._quota.connected([member["id"] for member in members[:MAX_RECIPIENTS]])
            if len(self._connected) >= MAX_CACHED_ROOMS:
                self._connected.clear()
            known_connected = self._connected[room_id] = (now, connected, known)
        _, connected, known = known_connected
        sender = event.sender_id
        offline = [
            {"id": str(member["id"]), "externalId": member["external_id"]}
            for member in members[:MAX_RECIPIENTS]
            if member["id"] != sender and member["id"] not in connected
        ]
        return {"offline": offline, "complete": known and len(members) <= MAX_RECIPIENTS}
