"""What mutations tell `myRooms` (one subscription for all of a user's rooms): small notes,
published after the change has committed, never the caller's error (live.publisher).

Two kinds of topic, so a change costs what it concerns:

- Each user's own topic (`user:<id>`) takes the notes about them alone: ADDED (they joined,
  were added, a DIRECT room was opened with them), REMOVED (they left, were removed or banned),
  UPDATED for them only (their unread count after markRead, their role). ADDED and REMOVED also
  tell their feed to follow, or stop following, the room's fan-out topic (live.following:
  FOLLOW, UNFOLLOW) before the note is delivered: from REMOVED on, nothing of that room reaches
  them (and the field's resolver re-checks membership for every note, so a note that crossed
  the removal reads as REMOVED, with no room).
- Each room's fan-out topic (`roomlist:<id>`) takes ONE note per room-wide change (a new
  message, an edit or delete, a rename, a topic or kind change), whatever the room's size.

Why not one note per member: a message in a room of 1,000 members would cost 1,000 publishes
and 1,000 Redis deliveries. Here it costs one publish; Redis delivers it once to each process
that holds the `myRooms` of at least one member (each process has one relay per followed room,
live.following), so O(processes); inside a process, the note is executed once per selection
for all the members there, each member's own values written in (their `unreadCount` is their
own: `("Room", "unreadCount")` is per-viewer in VIEWER_FIELDS, and `("Subscription",
"myRooms")` a shell over it in VIEWER_SHELLS). Following costs one broadcast subscription per
room per process, made when the first local member's `myRooms` starts, and shared by every
later one. What the members' results need (their role and unread count, the room's row and
last message) is read once per note and process for all of them, before the execution
(resolvers.sources.NoteListings).
"""

from __future__ import annotations

from collections.abc import Iterable

from live.source import FOLLOW, UNFOLLOW, Event
from resolvers.services import Services
from resolvers.topics import room_list_topic, user_topic

ADDED = "ADDED"
REMOVED = "REMOVED"
UPDATED = "UPDATED"


def note(change: str, room_id: int) -> Event:
    return {"change": change, "room_id": room_id}


async def added(services: Services, room_id: int, user_ids: Iterable[int]) -> None:
    """These users are now members of the room (joined, added, by invite, a DIRECT room opened
    with them): their `myRooms` follows it from now on, then hears ADDED."""
    for user_id in dict.fromkeys(user_ids):
        await services.publisher.event(user_topic(user_id), {**note(ADDED, room_id), FOLLOW: room_list_topic(room_id)})


async def removed(services: Services, room_id: int, user_ids: Iterable[int]) -> None:
    """These users are no longer members (left, removed, banned): their `myRooms` stops
    following the room, then hears REMOVED."""
    for user_id in dict.fromkeys(user_ids):
        await services.publisher.event(
            user_topic(user_id), {**note(REMOVED, room_id), UNFOLLOW: room_list_topic(room_id)}
        )


async def updated(services: Services, room_id: int, user_ids: Iterable[int] | None = None) -> None:
    """Something a room list shows changed: for everyone in the room (`user_ids` None: one note
    on its fan-out topic), or for these members alone (their unread count, their role)."""
    if user_ids is None:
        await services.publisher.event(room_list_topic(room_id), note(UPDATED, room_id))
        return
    for user_id in dict.fromkeys(user_ids):
        await services.publisher.event(user_topic(user_id), note(UPDATED, room_id))
