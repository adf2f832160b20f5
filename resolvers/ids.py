"""Parsing the IDs and cursors clients send back to us.

Every number in them is checked against the range of the columns it is compared with (int4:
ids and seqs are `INTEGER`), so nothing a client writes reaches SQL as a number the database
refuses: garbage, a negative number or one past 2**31 - 1 is BAD_USER_INPUT naming the argument,
never an INTERNAL_SERVER_ERROR (and a traceback in the log) from the database driver.
"""

import base64
import binascii

from core.errors import BadUserInput

_CURSOR_PREFIX = "seq:"


MAX_INT4 = 2**31 - 1
_MAX_DIGITS = 12  # int() of a long string is quadratic: no id or seq of ours is longer


def _number(text: str) -> int:
    """A decimal number of at most `_MAX_DIGITS` digits; ValueError otherwise."""
    text = text.strip()
    if not text or len(text) > _MAX_DIGITS or not text.lstrip("-").isdecimal() or not text.isascii():
        raise ValueError(text)
    return int(text)


def parse_id(value: str, what: str, argument: str = "id") -> int:
    """The row id an ID stands for. What cannot be one of our ids (not a decimal integer, zero,
    negative, past int4) is BAD_USER_INPUT; a well-formed one that names nothing is the
    caller's NOT_FOUND."""
    try:
        number = _number(str(value))
    except ValueError:
        number = 0
    if number <= 0 or number > MAX_INT4:
        raise BadUserInput(f"`{argument}` is not a valid {what} ID.", argument=argument)
    return number


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode()


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
    """A room event's cursor: its place in the room's log (opaque to clients)."""
    return base64.urlsafe_b64encode(f"{_EVENT_PREFIX}{room_id}:{seq}".encode()).decode()


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
