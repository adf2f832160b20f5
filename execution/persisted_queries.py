"""Automatic persisted queries, Apollo's protocol: a client sends `extensions.persistedQuery`
with the SHA-256 of its document and no text; an unknown hash gets PERSISTED_QUERY_NOT_FOUND,
on which the client sends the text once with the hash, and it is kept after it validated.

The store is bounded and shared: Redis (every worker and dyno) or this process's memory (the
embedded default). A stored text is hashed again when read, so a hash is never trusted for a
document it does not match, whoever wrote the key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from redis import asyncio as aioredis

logger = logging.getLogger("chat.graphql")

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"  # the message Apollo's link also looks for


class PersistedQueryError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def sha256(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


class QueryStore(Protocol):
    async def get(self, digest: str) -> str | None: ...

    async def put(self, digest: str, query: str) -> None: ...


class LRU:
    """The most recently used `size` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class MemoryQueryStore:
    def __init__(self, size: int) -> None:
        self._lru = LRU(size)

    async def get(self, digest: str) -> str | None:
        return self._lru.get(digest)

    async def put(self, digest: str, query: str) -> None:
        self._lru.put(digest, query)


class RedisQueryStore:
    """Each document under its own key with a TTL, and an index by last registration trimmed to
    `size`: the oldest go first. Read through a small local LRU (a hot document costs no round
    trip). Redis unavailable: a lookup misses (the client sends the text) and a registration is
    dropped; the request itself is served."""

    def __init__(self, redis: aioredis.Redis, prefix: str, size: int, ttl_seconds: int, local: int = 1000) -> None:
        self._redis = redis
        self._prefix = f"{prefix}apq:"
        self._index = f"{prefix}apq-index"
        self._size = size
        self._ttl = ttl_seconds
        self._local = LRU(min(local, size))

    async def get(self, digest: str) -> str | None:
        query = self._local.get(digest)
        if query is not None:
            return query
        try:
            raw = await self._redis.get(self._prefix + digest)
        except Exception as error:
            logger.warning("Persisted query lookup failed: %s", error)
            return None
        if raw is None:
            return None
        query = raw.decode() if isinstance(raw, bytes) else str(raw)
        self._local.put(digest, query)
        return query

    async def put(self, digest: str, query: str) -> None:
        self._local.put(digest, query)
        key = self._prefix + digest
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(key, query, ex=self._ttl)
                pipe.zadd(self._index, {digest: time.time()})
                pipe.zcard(self._index)
                count = (await pipe.execute())[-1]
            if count > self._size:
                evicted: list[Any] = await self._redis.zpopmin(self._index, count - self._size)
                if evicted:
                    await self._redis.delete(*(self._prefix + pair[0].decode() for pair in evicted))
        except Exception as error:
            logger.warning("Persisted query registration failed: %s", error)


class PersistedQueries:
    def __init__(self, store: QueryStore) -> None:
        self.store = store

    async def resolve(self, payload: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The payload with its query text, and the hash to register once it validated (None:
        nothing to register). Raises PersistedQueryError."""
        extensions = payload.get("extensions")
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if persisted is None:
            return payload, None
        if not isinstance(persisted, dict) or not isinstance(persisted.get("sha256Hash"), str):
            raise PersistedQueryError(400, "`extensions.persistedQuery` needs a `sha256Hash`.", "BAD_REQUEST")
        if persisted.get("version", 1) != 1:
            raise PersistedQueryError(400, "Unsupported persisted query version.", "PERSISTED_QUERY_NOT_SUPPORTED")
        digest = persisted["sha256Hash"].lower()
        query = payload.get("query")
        if isinstance(query, str):
            if sha256(query) != digest:
                raise PersistedQueryError(400, "provided sha does not match query", "PERSISTED_QUERY_HASH_MISMATCH")
            return payload, digest
        if query is not None:
            return payload, None  # not a string: the shape check refuses it
        stored = await self.store.get(digest)
        if stored is None or sha256(stored) != digest:
            raise PersistedQueryError(200, NOT_FOUND_MESSAGE, NOT_FOUND)
        return {**payload, "query": stored}, None

    async def register(self, digest: str, query: str) -> None:
        await self.store.put(digest, query)
