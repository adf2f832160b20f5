"""The raw floor the benchmark measures the product against: bare ASGI, no GraphQL, no database.

A posted message is turned into one pre-serialized result frame per live field, once, and every
worker forwards that frame to each of its sockets with ASGI `send`. Whatever the product spends
beyond this is the price of GraphQL, the log and the guarantees. It fakes just enough of the
API for the benchmark's load generator: sign-up, rooms, posting, graphql-transport-ws.

    gunicorn -c serving/gunicorn.conf.py bench.floor_app:app
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import defaultdict
from typing import Any

import orjson
from redis import asyncio as aioredis

from core.settings import load

settings = load()
CHANNEL = f"{settings.channel_prefix}floor:"
SENDER = {"id": "1", "name": "bench", "avatar": "https://www.gravatar.com/avatar/0?s=32&d=identicon"}

# room -> field -> the ASGI send of each subscribed socket
subscribers: dict[str, dict[str, set[Any]]] = defaultdict(lambda: defaultdict(set))
ids = itertools.count(1)
state: dict[str, Any] = {}


async def forward(redis: aioredis.Redis) -> None:
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(f"{CHANNEL}*")
    while True:
        message = await pubsub.get_message(timeout=1.0)
        if message is None or message["type"] != "pmessage":
            continue
        room = message["channel"].decode()[len(CHANNEL) :]
        value = orjson.loads(message["data"])
        for field, sends in list(subscribers.get(room, {}).items()):
            data = {field: value} if field == "messageCreated" else {field: {"cursor": "c", "message": value}}
            frame = orjson.dumps({"type": "next", "id": "1", "payload": {"data": data}}).decode()
            for send in list(sends):
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.send", "text": frame})


async def respond(send: Any, body: dict) -> None:
    payload = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def http(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/healthz":
        await respond(send, {"status": "ok"})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    request = orjson.loads(b"".join(chunks) or b"{}")
    query, variables = request.get("query", ""), request.get("variables") or {}
    redis: aioredis.Redis = state["redis"]
    if "signUp" in query:
        await respond(send, {"data": {"signUp": {"token": uuid.uuid4().hex}}})
    elif "createRoom" in query:
        await respond(send, {"data": {"createRoom": {"id": str(await redis.incr(f"{CHANNEL}rooms"))}}})
    elif "joinRoom" in query:
        await respond(send, {"data": {"joinRoom": {"id": variables.get("r") or variables.get("room")}}})
    elif "createMessage" in query:
        message = {
            "id": str(next(ids)) + uuid.uuid4().hex[:6],
            "body": variables["body"],
            "createdAt": f"{time.time():.6f}",
            "sender": SENDER,
        }
        await redis.publish(f"{CHANNEL}{variables['room']}", orjson.dumps(message))
        await respond(send, {"data": {"createMessage": {"id": message["id"]}}})
    else:
        await respond(send, {"data": {"me": {"id": "1", "name": "bench"}}})


async def websocket(scope: Any, receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept", "subprotocol": "graphql-transport-ws"})
    joined: list[tuple[str, str]] = []
    try:
        while (message := await receive())["type"] != "websocket.disconnect":
            data = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
            if data.get("type") == "connection_init":
                await send({"type": "websocket.send", "text": '{"type":"connection_ack"}'})
            elif data.get("type") == "ping":
                await send({"type": "websocket.send", "text": '{"type":"pong"}'})
            elif data.get("type") == "subscribe":
                payload = data["payload"]
                field = "roomEvents" if "roomEvents" in payload["query"] else "messageCreated"
                room = payload["variables"]["room"]
                subscribers[room][field].add(send)
                joined.append((room, field))
    finally:
        for room, field in joined:
            subscribers[room][field].discard(send)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        state["redis"] = aioredis.Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379")
        reader = asyncio.create_task(forward(state["redis"]))
        await send({"type": "lifespan.startup.complete"})
        await receive()
        reader.cancel()
        await state["redis"].aclose()
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        await http(scope, receive, send)
    else:
        await websocket(scope, receive, send)
