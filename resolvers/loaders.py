"""Per-request batching of users, rooms and room members (no N+1 queries)."""

from aiodataloader import DataLoader

from db import messages, rooms, users
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


class PageLoader(DataLoader[tuple[int, int, int | None], list[Row]]):
    """Keys are (room, limit, before): pages asked with the same limit and cursor share a query,
    so every room of a request pages together and their senders batch together too."""

    async def batch_load_fn(self, keys: list[tuple[int, int, int | None]]) -> list[list[Row]]:
        groups: dict[tuple[int, int | None], list[int]] = {}
        for room_id, limit, before in keys:
            groups.setdefault((limit, before), []).append(room_id)
        pages: dict[tuple[int, int, int | None], list[Row]] = {}
        for (limit, before), room_ids in groups.items():
            for room_id, rows in (await messages.newest_first(room_ids, limit, before)).items():
                pages[(room_id, limit, before)] = rows
        return [pages[key] for key in keys]


class Loaders:
    """A fresh set per request; subscriptions make a fresh set per event, so nothing goes stale."""

    def __init__(self) -> None:
        self.users = UserLoader()
        self.rooms = RoomLoader()
        self.members = MembersLoader()
        self.pages = PageLoader()
