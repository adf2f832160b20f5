"""What goes over a room's channel. Events carry everything a subscriber renders, so
N subscribers cost no database reads."""

from __future__ import annotations

import json
import logging
from typing import Any

from realtime.broadcast import broadcast, room_channel

logger = logging.getLogger("chat.events")

MESSAGE, LEFT, REVOKED, RESYNC = "message", "left", "revoked", "resync"


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in row.items()}


async def _publish(room_id: int, event: dict[str, Any]) -> None:
    """Postgres is the source of truth: a failed publish is logged, never the caller's error.
    Subscribers catch up from the database on their next event or after Redis reconnects."""
    try:
        await broadcast.publish(room_channel(room_id), json.dumps(event, separators=(",", ":")))
    except Exception:
        logger.exception("Publishing a %s event to room %s failed", event["type"], room_id)


async def publish_message(message: dict, *, room: dict, sender: dict) -> None:
    await _publish(
        message["room_id"],
        {
            "type": MESSAGE,
            "message": _jsonable(message),
            "room": _jsonable(room),
            "sender": {key: sender[key] for key in ("id", "name", "email_hash")},
        },
    )


async def publish_member_left(room_id: int, user_id: int) -> None:
    await _publish(room_id, {"type": LEFT, "user_id": user_id})


async def publish_token_revoked(rooms: list[dict], token_hash: str) -> None:
    for room in rooms:
        await _publish(room["id"], {"type": REVOKED, "token_hash": token_hash})


def decode(message: str) -> dict[str, Any]:
    return json.loads(message)
