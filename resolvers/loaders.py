"""Per-request batching of users, rooms and room members (no N+1 queries)."""

from functools import cached_property
from typing import Any

from aiodataloader import DataLoader
from databases import Database

from db import messages, read_state, room_events, rooms, users
from db.records import Row


class DatabaseLoader(DataLoader):
    def __init__(self, db: Database, **options: Any) -> None:
        super().__init__(**options)
        self.db = db


class UserLoader(DatabaseLoader):
    async def batch_load_fn(self, keys: list[int]) -> list[Row | None]:
        found = {row["id"]: row for row in await users.users_by_ids(self.db, list(keys))}
        return [found.get(key) for key in keys]


class RoomLoader(DatabaseLoader):
    async def batch_load_fn(self, keys: list[int]) -> list[Row | None]:
        found = {row["id"]: row for row in await rooms.rooms_by_ids(self.db, list(keys))}
        return [found.get(key) for key in keys]


class MembersLoader(DatabaseLoader):
    """Keys are (room, limit): the members of every room of a request asked with one limit are
    read in one statement."""

    async def batch_load_fn(self, keys: list[tuple[int, int]]) -> list[list[Row]]:
        groups: dict[int, list[int]] = {}
        for room_id, limit in keys:
            groups.setdefault(limit, []).append(room_id)
        found: dict[tuple[int, int], list[Row]] = {}
        for limit, room_ids in groups.items():
            for room_id, members in (await rooms.members_by_room_ids(self.db, room_ids, limit)).items():
                found[(room_id, limit)] = members
        return [found.get(key, []) for key in keys]


class MembershipsLoader(DatabaseLoader):
    """Keys are (room, limit, after): pages asked alike share one statement, as members' do."""

    async def batch_load_fn(self, keys: list[tuple[int, int, int | None]]) -> list[list[Row]]:
        groups: dict[tuple[int, int | None], list[int]] = {}
        for room_id, limit, after in keys:
            groups.setdefault((limit, after), []).append(room_id)
        found: dict[tuple[int, int, int | None], list[Row]] = {}
        for (limit, after), room_ids in groups.items():
            for room_id, page in (await rooms.memberships_by_room_ids(self.db, room_ids, limit, after)).items():
                found[(room_id, limit, after)] = page
        return [found.get(key, []) for key in keys]


class EventsLoader(DatabaseLoader):
    """Keys are (room, after, limit), as `PageLoader`'s: the pages of every room of a request
    asked alike (`rooms { events(first: 20) }`) are read in one statement, and their messages'
    reactions in one more, whatever the number of rooms."""

    async def batch_load_fn(self, keys: list[tuple[int, int, int]]) -> list[list[room_events.Event]]:
        groups: dict[tuple[int, int], list[int]] = {}
        for room_id, after, limit in keys:
            groups.setdefault((after, limit), []).append(room_id)
        pages: dict[tuple[int, int, int], list[room_events.Event]] = {}
        for (after, limit), room_ids in groups.items():
            for room_id, events in (await room_events.after_in_rooms(self.db, room_ids, after, limit)).items():
                pages[(room_id, after, limit)] = events
        return [pages[key] for key in keys]


class PageLoader(DatabaseLoader):
    """Keys are (room, limit, before): pages asked with the same limit and cursor share a query,
    so every room of a request pages together and their senders batch together too."""

    async def batch_load_fn(self, keys: list[tuple[int, int, int | None]]) -> list[list[Row]]:
        groups: dict[tuple[int, int | None], list[int]] = {}
        for room_id, limit, before in keys:
            groups.setdefault((limit, before), []).append(room_id)
        pages: dict[tuple[int, int, int | None], list[Row]] = {}
        for (limit, before), room_ids in groups.items():
            for room_id, rows in (await messages.newest_first(self.db, room_ids, limit, before)).items():
                pages[(room_id, limit, before)] = rows
        return [pages[key] for key in keys]


class LastMessageLoader(DatabaseLoader):
    """Keys are room ids; each room's newest message with its sender (None before any), every
    room of a request in one statement."""

    async def batch_load_fn(self, keys: list[int]) -> list[Row | None]:
        found = await messages.last_messages(self.db, list(keys))
        return [found.get(key) for key in keys]


class ReactionsLoader(DatabaseLoader):
    async def batch_load_fn(self, keys: list[int]) -> list[list[dict]]:
        found = await room_events.reactions_by_message(self.db, list(keys))
        return [found.get(key, []) for key in keys]


class ReadStateLoader(DatabaseLoader):
    """Keys are room ids; the viewer's read state in each (one query for all of a request's)."""

    def __init__(self, db: Database, user_id: int) -> None:
        super().__init__(db)
        self.user_id = user_id

    async def batch_load_fn(self, keys: list[int]) -> list[read_state.ReadState | None]:
        found = await read_state.read_states(self.db, self.user_id, list(keys))
        return [found.get(key) for key in keys]


class Loaders:
    """A fresh set per request, and per event for the live engine, so nothing goes stale; each
    loader is made when first used (an event's execution rarely needs any)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._read_states: dict[int, ReadStateLoader] = {}

    @cached_property
    def users(self) -> UserLoader:
        return UserLoader(self._db)

    @cached_property
    def rooms(self) -> RoomLoader:
        return RoomLoader(self._db)

    @cached_property
    def members(self) -> MembersLoader:
        return MembersLoader(self._db)

    @cached_property
    def memberships(self) -> MembershipsLoader:
        return MembershipsLoader(self._db)

    @cached_property
    def events(self) -> EventsLoader:
        return EventsLoader(self._db)

    @cached_property
    def pages(self) -> PageLoader:
        return PageLoader(self._db)

    @cached_property
    def last_messages(self) -> LastMessageLoader:
        return LastMessageLoader(self._db)

    @cached_property
    def reactions(self) -> ReactionsLoader:
        return ReactionsLoader(self._db)

    def read_state(self, user_id: int) -> ReadStateLoader:
        loader = self._read_states.get(user_id)
        if loader is None:
            loader = self._read_states[user_id] = ReadStateLoader(self._db, user_id)
        return loader
