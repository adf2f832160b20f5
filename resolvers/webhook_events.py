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
from datetime import datetime
from typing import Any

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


class WebhookEvents:
    """Builds deliveries' bodies for one process: its database and its view of who is connected."""

    def __init__(self, db: Database, quota: LiveQuota) -> None:
        self._db = db
        self._quota = quota
        # Taken around every database read or write of webhook delivery (here and the dispatcher's).
        self.connections = asyncio.Semaphore(DB_CONNECTIONS)
        # By room: when read, its members, who of them is connected, whether that is known everywhere.
        self._recipients: dict[int, tuple[float, list[Row], set[int], bool]] = {}

    async def room(self, room_id: int) -> Row | None:
        """The room as deliveries name it, with its log's head (`last_event_seq`)."""
        async with self.connections:
            return await webhooks.room(self._db, room_id)

    async def page(self, room: Row, after: int, limit: int) -> list[tuple[room_events.Event, dict[str, Any]]]:
        """The room's next `limit` events after `after`, each with its body (no `id`, no
        `recipients`): three reads for the page (the events, their users' and messages' ids)."""
        self._recipients.pop(room["id"], None)  # a page's recipients are read anew
        async with self.connections:
            events = await room_events.after(self._db, {"id": room["id"], "name": room["name"]}, after, limit)
        user_ids: set[int] = set()
        message_ids: set[int] = set()
        for event in events:
            if event["user"] is not None:
                user_ids.add(int(event["user"]["id"]))
            if event.get("by") is not None:
                user_ids.add(int(event["by"]))
            if event["message"] is not None:
                if "kind" not in event["message"]:  # a log that does not read messages' kind
                    message_ids.add(int(event["message"]["id"]))
                user_ids.add(int(event["message"]["sender_id"]))
        async with self.connections:
            externals = await webhooks.external_ids(self._db, sorted(user_ids))
            kinds = await webhooks.message_kinds(self._db, sorted(message_ids)) if message_ids else {}
        about = {"id": str(room["id"]), "externalId": room["external_id"], "kind": room["kind"]}

        def user(user_id: Any) -> dict[str, Any] | None:
            if user_id is None:
                return None
            return {"id": str(user_id), "externalId": externals.get(int(user_id))}

        def message(found: dict[str, Any]) -> dict[str, Any]:
            return {
                "id": str(found["id"]),
                "kind": found.get("kind") or kinds.get(int(found["id"]), "USER"),
                "body": found["body"],
                "sender": user(found["sender_id"]),
                "createdAt": _time(found["created_at"]),
                "editedAt": _time(found["edited_at"]),
                "deleted": found["deleted_at"] is not None,
                "reactions": [{"emoji": r["emoji"], "count": r["count"]} for r in found.get("reactions", ())],
            }

        built = []
        for event in events:
            kind = event["kind"]
            subject = user(event["user"]["id"]) if event["user"] is not None else None
            data: dict[str, Any]
            if kind in (room_events.MESSAGE_CREATED, room_events.MESSAGE_EDITED):
                data = {"message": message(event["message"])}
            elif kind == room_events.MESSAGE_DELETED:
                data = {"messageId": str(event["message"]["id"]), "by": subject}
            elif kind == room_events.REACTION_CHANGED:
                data = {"message": message(event["message"]), "user": subject}
                data |= {"emoji": event.get("emoji"), "added": event.get("added")}
            elif kind == room_events.READ_UP_TO:
                data = {"user": subject, "upTo": encode_event_cursor(room["id"], int(event["up_to"]))}
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
            body = {
                "type": TYPES.get(kind, kind.replace("_", ".")),
                "room": about,
                "cursor": encode_event_cursor(room["id"], event["seq"]),
                "at": _time(event["at"]),
                "data": data,
            }
            built.append((event, body))
        return built

    async def recipients(self, room_id: int, event: room_events.Event) -> dict[str, Any] | None:
        """`recipients` for a message.created (None for any other event): the members and who
        of them is connected, read in the same page and at most RECIPIENTS_FRESH_SECONDS before
        the attempt (a busy room's deliveries share one read)."""
        if event["kind"] != room_events.MESSAGE_CREATED:
            return None
        now = time.monotonic()
        cached = self._recipients.get(room_id)
        if cached is None or now - cached[0] > RECIPIENTS_FRESH_SECONDS:
            async with self.connections:
                members = await webhooks.members(self._db, room_id, MAX_RECIPIENTS + 1)
            connected, known = await self._quota.connected([member["id"] for member in members[:MAX_RECIPIENTS]])
            if len(self._recipients) >= MAX_CACHED_ROOMS:
                self._recipients.clear()
            cached = self._recipients[room_id] = (now, members, connected, known)
        _, members, connected, known = cached
        sender = int(event["message"]["sender_id"])
        offline = [
            {"id": str(member["id"]), "externalId": member["external_id"]}
            for member in members[:MAX_RECIPIENTS]
            if member["id"] != sender and member["id"] not in connected
        ]
        return {"offline": offline, "complete": known and len(members) <= MAX_RECIPIENTS}
