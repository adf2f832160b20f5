"""Per-request batching of users, rooms and room members (no N+1 queries)."""

from aiodataloader import DataLoader

from db import rooms, users
from db.records import Row


class UserLoader(DataLoader[int, Row | None]):
    async def batch_load_fn(self, keys: list[int]) -> list[Row | None]:
        found = {row["id"]: row for row in await users.users_by_ids(list(keys))}
        return [found.get(key) for key in keys]


class RoomLoader(DataLoader[int, Row | None]):
    async def batch_load_fn(self, keys: list[int]) -> list[Row | None]:
        found = {row["id"]: row for row in await rooms.rooms_by_ids(list(keys))}
        return [found.get(key) for key in keys]


class MembersLoader(DataLoader[int, list[Row]]):
    async def batch_load_fn(self, keys: list[int]) -> list[list[Row]]:
        grouped = await rooms.members_by_room_ids(list(keys))
        return [grouped.get(key, []) for key in keys]


class Loaders:
    """A fresh set per request; subscriptions make a fresh set per event, so nothing goes stale."""

    def __init__(self) -> None:
        self.users = UserLoader()
        self.rooms = RoomLoader()
        self.members = MembersLoader()
