"""Cursors are made without base64's wrappers (a room list makes one a room): the same text as
base64.urlsafe_b64encode, and read back by their decoders."""

import base64

from resolvers.ids import decode_cursor, decode_event_cursor, encode_cursor, encode_event_cursor


def test_cursors_are_urlsafe_base64_and_read_back() -> None:
    for room in (1, 123_456_789, 2**62 + 3):
        for seq in (1, 62, 63, 999_999, 2**31 - 1):
            made = encode_event_cursor(room, seq)
            assert made == base64.urlsafe_b64encode(f"event:{room}:{seq}".encode()).decode()
            assert decode_event_cursor(made, room) == seq
    for seq in (0, 1, 2**31 - 1):
        assert encode_cursor(seq) == base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode()
        assert decode_cursor(encode_cursor(seq)) == seq
