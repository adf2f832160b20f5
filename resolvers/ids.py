"""Parsing the IDs and cursors clients send back to us."""

import base64
import binascii

from errors import BadUserInput, NotFound

_CURSOR_PREFIX = "seq:"


def parse_id(value: str, what: str) -> int:
    """A malformed ID names nothing we have: NOT_FOUND, like an unknown one."""
    try:
        number = int(str(value))
    except ValueError:
        raise NotFound(f"{what} not found.") from None
    if number <= 0 or number > 2**31 - 1:
        raise NotFound(f"{what} not found.")
    return number


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        return int(text[len(_CURSOR_PREFIX) :])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadUserInput("Invalid cursor.", argument="after") from None


_EVENT_PREFIX = "event:"


def encode_event_cursor(room_id: int, seq: int) -> str:
    """A room event's cursor: its place in the room's log (opaque to clients)."""
    return base64.urlsafe_b64encode(f"{_EVENT_PREFIX}{room_id}:{seq}".encode()).decode()


def decode_event_cursor(cursor: str, room_id: int, argument: str = "after") -> int:
    """The seq a cursor of this room's log stands for; BAD_USER_INPUT for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith(_EVENT_PREFIX):
            raise ValueError(text)
        room, _, seq = text[len(_EVENT_PREFIX) :].partition(":")
        if int(room) == room_id and int(seq) >= 0:
            return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise BadUserInput("Not a cursor of this room's events.", argument=argument)
