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
