"""The names of a room's live topics (a Redis channel each, under the channel prefix)."""

ROOM_TOPIC_PREFIX = "room:"


def room_topic(room_id: int) -> str:
    """The room's log: messages, edits, deletes, reactions, read positions, joins, leaves."""
    return f"{ROOM_TOPIC_PREFIX}{room_id}"


def typing_topic(room_id: int) -> str:
    return f"typing:{room_id}"


def presence_topic(room_id: int) -> str:
    return f"presence:{room_id}"


def topics_of(room_id: int) -> tuple[str, ...]:
    """Every topic of a room: a member who leaves is ended on each."""
    return room_topic(room_id), typing_topic(room_id), presence_topic(room_id)


def room_list_topic(room_id: int) -> str:
    """The room's fan-out of what its room-list entry shows (a new message, a rename): one note
    per change, heard by every process holding a member's `myRooms` (resolvers.room_changes)."""
    return f"roomlist:{room_id}"


def user_topic(user_id: int) -> str:
    """A user's own notes: rooms they joined, left or were added to or removed from, and what
    changed for them alone in one (their unread count, their role)."""
    return f"user:{user_id}"
