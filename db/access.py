"""Who may receive a room's messages: one batched read for every subscription starting at once.

A subscription is checked twice (when it starts, and again once its room's feed holds it, so a
logOut or leaveRoom in between cannot slip past). After a deploy every client resubscribes within
seconds; each check alone would be a query, and a storm of them would queue behind the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from db.batching import GroupedLoader
from db.connection import database
from db.records import Row, as_rows
from db.rooms import rooms_by_ids
from db.tables import memberships, messages, tokens


@dataclass(frozen=True)
class Access:
    room: Row | None
    signed_in: bool
    member: bool


async def _access(keys: list[tuple[str, int]]) -> dict[tuple[str, int], Access]:
    room_ids = sorted({room_id for _, room_id in keys})
    digests = sorted({digest for digest, _ in keys})
    found = {row["id"]: row for row in await rooms_by_ids(room_ids)}
    query = (
        sa.select(tokens.c.token_hash, memberships.c.room_id)
        .select_from(
            tokens.outerjoin(
                memberships,
                sa.and_(memberships.c.user_id == tokens.c.user_id, memberships.c.room_id.in_(room_ids)),
            )
        )
        .where(tokens.c.token_hash.in_(digests))
    )
    signed_in: set[str] = set()
    member: set[tuple[str, int]] = set()
    for row in as_rows(await database.fetch_all(query)):
        signed_in.add(row["token_hash"])
        if row["room_id"] is not None:
            member.add((row["token_hash"], row["room_id"]))
    return {key: Access(found.get(key[1]), key[0] in signed_in, key in member) for key in keys}


async def _positions(ids: list[int]) -> dict[int, tuple[int, int] | None]:
    query = sa.select(messages.c.id, messages.c.room_id, messages.c.seq).where(messages.c.id.in_(ids))
    found = {row["id"]: (row["room_id"], row["seq"]) for row in as_rows(await database.fetch_all(query))}
    return {key: found.get(key) for key in ids}


_access_loader: GroupedLoader[tuple[str, int], Access] = GroupedLoader(_access, name="access")
_position_loader: GroupedLoader[int, tuple[int, int] | None] = GroupedLoader(_positions, name="message position")


async def room_access(token_hash: str, room_id: int) -> Access:
    return await _access_loader.load((token_hash, room_id))


async def message_position(message_id: int) -> tuple[int, int] | None:
    """(room id, seq) of a message, or None."""
    return await _position_loader.load(message_id)
