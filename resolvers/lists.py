"""The bound every list field takes: `rooms`, `unreadCounts` and `Room.members` return at most
`first` items, 100 unless asked, never more than 500. The SQL applies the limit, so a user in
thousands of rooms, or a room of thousands, costs one bounded read; the cost rule multiplies a
list's children by its `first`."""

from core.errors import BadUserInput

DEFAULT_LIST = 100
MAX_LIST = 500


def list_size(first: int | None) -> int:
    """`first` as asked; BAD_USER_INPUT outside 0..MAX_LIST (an explicit null included)."""
    if first is None or not 0 <= first <= MAX_LIST:
        raise BadUserInput(f"`first` must be between 0 and {MAX_LIST}.", argument="first")
    return first
