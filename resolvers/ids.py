"""Parsing the IDs and cursors clients send back to us.

An ID is a user's, a room's or a message's row id (db/ids.py: random, in [2**32, 2**63)) as a
decimal string: every transport and client passes it on as the string it got, and nothing of
ours reads it as a JSON number (a 19-digit number would not survive JavaScript's doubles).

Every number in what a client sends is checked against the range of the columns it is compared
with (ids are BIGINT, seqs INTEGER), so nothing reaches SQL as a number the database refuses:
garbage, zero, a negative number, an id past 2**63 - 1 or a seq past 2**31 - 1 is
BAD_USER_INPUT naming the argument, never an INTERNAL_SERVER_ERROR (and a traceback in the log)
from the database driver. A well-formed id that names nothing, an id from before migration
0007_opaque_ids among them, is the caller's NOT_FOUND.
"""

import base64
import binascii

from core.errors import BadUserInput
from db.ids import MAX_ID

_CURSOR_PREFIX = "seq:"
# base64.urlsafe_b64encode's own steps, without its wrappers: a room list makes one cursor a room.
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _urlsafe_b64(text: str) -> str:
    return binascii.b2a_base64(text.encode(), newline=False).translate(_URLSAFE).decode()


MAX_INT4 = 2**31 - 1
_MAX_DIGITS = 19  # int() of a long string is quadratic: no id (< 2**63) or seq of ours is longer


def _number(text: str) -> int:
    """A decimal number of at most `_MAX_DIGITS` digits; ValueError otherwise."""
    text = text.strip()
    if not text or len(text) > _MAX_DIGITS or not text.lstrip("-").isdecimal() or not text.isascii():
        raise ValueError(text)
    return int(text)


def parse_id(value: str, what: str, argument: str = "id") -> int:
    """The row id an ID stands for. What cannot be one of our ids (not a decimal integer, zero,
    negative, past 2**63 - 1) is BAD_USER_INPUT; a well-formed one that names nothing is the
    caller's NOT_FOUND."""
    try:
        number = _number(str(value))
    except ValueError:
        number = 0
    if number <= 0 or number > MAX_ID:
        raise BadUserInput(f"`{argument}` is not a valid {what} ID.", argument=argument)
    return number


def encode_cursor(seq: int) -> str:
    """A message list's cursor: the seq of the page's last message. It tells a member how many
    messages the room has had, which they can read anyway; nobody else gets one."""
    return _urlsafe_b64(f"{_CURSOR_PREFIX}{seq}")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        seq = _number(text[len(_CURSOR_PREFIX) :])
        if 0 <= seq <= MAX_INT4:
            return seq
    except (ValueError, binascii.Error, UnicodeError):
        pass
    raise BadUserInput("Invalid cursor.", argument="after")


_EVENT_PREFIX = "event:"


def encode_event_cursor(room_id: int, seq: int) -> str:
    """A room event's cursor: its place in the room's log (opaque to clients). It names the room
    (whose random id tells nothing) and the event's seq in that room's log, which only a member
    reads; a cursor of another room, one from before migration 0007_opaque_ids among them, is
    refused by `decode_event_cursor`, never taken as a place in this room."""
    return _urlsafe_b64(f"{_EVENT_PREFIX}{room_id}:{seq}")


def decode_event_cursor(cursor: str, room_id: int, argument: str = "after") -> int:
    """The seq a cursor of this room's log stands for; BAD_USER_INPUT for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith(_EVENT_PREFIX):
            raise ValueError(text)
        room, _, seq = text[len(_EVENT_PREFIX) :].partition(":")
        number = _number(seq)
        if _number(room) == room_id and 0 <= number <= MAX_INT4:
            return number
    except (ValueError, binascii.Error, UnicodeError):
        pass
    raise BadUserInput("Not a cursor of this room's events.", argument=argument)
