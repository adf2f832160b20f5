"""The avatar we generate for a user who set no image of their own: an identicon drawn from the
user's id alone (nothing about their email), served at `GET /avatars/<id>.svg?s=<size>`.

It reads nothing (no database, no account needed) and is the same for ever, so it is cached
by browsers and proxies for a year. The id is at most 19 digits and the size is clamped, so a
response is a few KB whatever is asked; anything else is a 404.
"""

from __future__ import annotations

import hashlib
import re

from starlette.requests import Request
from starlette.responses import Response

MIN_SIZE, MAX_SIZE = 1, 2048
DEFAULT_SIZE = 80
GRID = 5
NAME = re.compile(r"(\d{1,19})\.svg")
CACHE = "public, max-age=31536000, immutable"
# Opened on its own, an SVG is a document: this one may run and load nothing.
HEADERS = {"cache-control": CACHE, "content-security-policy": "default-src 'none'", "x-content-type-options": "nosniff"}


def clamp_size(size: int) -> int:
    return min(max(size, MIN_SIZE), MAX_SIZE)


def url(user_id: int | str, size: int) -> str:
    """The avatar's path on this server (relative: it never echoes a client's Host header)."""
    return f"/avatars/{int(user_id)}.svg?s={clamp_size(size)}"


def identicon(user_id: int, size: int) -> str:
    """A 5x5 mirrored grid in a colour of the id's own, as SVG."""
    digest = hashlib.sha256(f"chat-avatar:{user_id}".encode()).digest()
    hue = int.from_bytes(digest[:2], "big") % 360
    colour = f"hsl({hue},55%,50%)"
    cells = []
    bits = int.from_bytes(digest[2:6], "big")
    for row in range(GRID):
        for column in range((GRID + 1) // 2):
            if bits >> (row * 3 + column) & 1:
                for x in {column, GRID - 1 - column}:
                    cells.append(f'<rect x="{x}" y="{row}" width="1" height="1"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="-0.5 -0.5 {GRID + 1} {GRID + 1}" shape-rendering="crispEdges">'
        f'<rect x="-0.5" y="-0.5" width="{GRID + 1}" height="{GRID + 1}" fill="#f0f0f0"/>'
        f'<g fill="{colour}">{"".join(cells)}</g></svg>'
    )


async def endpoint(request: Request) -> Response:
    match = NAME.fullmatch(request.path_params["name"])
    raw_size = request.query_params.get("s", str(DEFAULT_SIZE))
    if match is None or not raw_size.isdigit() or len(raw_size) > 5:
        return Response("Not found.", 404, media_type="text/plain")
    body = identicon(int(match.group(1)), clamp_size(int(raw_size)))
    return Response(body, 200, HEADERS, media_type="image/svg+xml")
