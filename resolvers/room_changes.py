"""Where changes to people's lists of rooms are told, one function per kind of change, so the
feed of my rooms (`myRooms`) has one place to hear them from.

`added(services, room_id, user_ids)`: room `room_id` was added to the lists of `user_ids` (it
was created with them in it: a DIRECT room opened with them). Called after the change commits,
once per change, never for a room that was already theirs. It does nothing yet: the `myRooms`
feed (issue 26) fills it in. Whatever it does, it must not fail the mutation that calls it (the
change has committed): it swallows nothing today because it does nothing.
"""

from __future__ import annotations

from collections.abc import Collection

from resolvers.services import Services


async def added(services: Services, room_id: int, user_ids: Collection[int]) -> None:
    """Room `room_id` is now in the room lists of `user_ids` (committed). A no-op for now."""
    del services, room_id, user_ids
