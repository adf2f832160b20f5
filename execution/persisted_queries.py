"""Automatic persisted queries, Apollo's protocol: a client sends `extensions.persistedQuery`
with the SHA-256 of its document and no text; an unknown hash gets PERSISTED_QUERY_NOT_FOUND,
on which the client sends the text once with the hash, and it is kept after it validated.

The store is bounded in documents and in bytes, and shared: Redis (every worker and dyno) or
this process's memory (the embedded default); the least recently registered (in Redis) or used
(in memory) go first. Only a signed-in user's request registers a document (the app decides,
see `GraphQLOverHTTP.may_register`): an anonymous request with hash and text is served but not
kept, so filling the store takes accounts, which are rate limited. A stored text is hashed again
when read, so a hash is never trusted for a document it does not match, whoever wrote the key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis import asyncio as aioredis

from core.redis_clients import RedisBreaker, RedisUnavailable
from execution.documents import BytesLRU, text_bytes

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


# What a stored document weighs beyond its text: its hash, and the store's bookkeeping.
ENTRY_OVERHEAD = 128
# The most a Redis store keeps in each worker's memory, in front of Redis.
LOCAL_BYTES = 256 * 1024


def weight(digest: str, query: str) -> int:
    return text_bytes(query) + len(digest) + ENTRY_OVERHEAD


class MemoryQueryStore:
    """At most `size` documents and `max_bytes` of them, the least recently used going first."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self._lru: BytesLRU[str, str] = BytesLRU(max_bytes)

    async def get(self, digest: str) -> str | None:
        return self._lru.get(digest)

    async def put(self, digest: str, query: str) -> None:
        self._lru.put(digest, query, weight(digest, query))
        while len(self._lru) > self.size:
            self._lru.pop_oldest()

    @property
    def bytes(self) -> int:
        return self._lru.bytes


# One registration, atomically: store the text with its TTL, index it by time and size, then
# drop the oldest until both the count and the total bytes are within their bounds. (A key that
# expired meanwhile still counts until it is dropped, oldest first: the store only holds less.)
REGISTER = """
local index, sizes, total = KEYS[1], KEYS[2], KEYS[3]
local prefix, digest, query = ARGV[1], ARGV[2], ARGV[3]
local ttl, now, max_count, max_bytes, size = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7]), tonumber(ARGV[8])
local old = tonumber(redis.call('HGET', sizes, digest) or '0')
redis.call('SET', prefix .. digest, query, 'EX', ttl)
redis.call('ZADD', index, now, digest)
redis.call('HSET', sizes, digest, size)
local bytes = redis.call('INCRBY', total, size - old)
local count = redis.call('ZCARD', index)
while count > 0 and (count > max_count or bytes > max_bytes) do
  local victim = redis.call('ZPOPMIN', index)[1]
  redis.call('DEL', prefix .. victim)
  local freed = tonumber(redis.call('HGET', sizes, victim) or '0')
  redis.call('HDEL', sizes, victim)
  bytes = redis.call('INCRBY', total, -freed)
  count = count - 1
end
return bytes
"""


class RedisQueryStore:
    """Each document under its own key with a TTL; an index by last registration, their sizes
    and their total, trimmed (oldest first) to `size` documents and `max_bytes` by one script.
    Read through a small local LRU (a hot document costs no round trip). Redis unavailable: a
    lookup misses (the client sends the text) and a registration is dropped; the request itself
    is served. Each Redis call goes through the process's breaker (redis_client.RedisBreaker), so
    a Redis that answers nothing counts as unavailable within REDIS_COMMAND_TIMEOUT."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        size: int,
        ttl_seconds: int,
        max_bytes: int,
        local: int = 1000,
        breaker: RedisBreaker | None = None,
    ) -> None:
        self._redis = redis
        self._breaker = breaker
        self._prefix = f"{prefix}apq:"
        self._keys = [f"{prefix}apq-index", f"{prefix}apq-sizes", f"{prefix}apq-bytes"]
        self._size = size
        self._max_bytes = max_bytes
        self._ttl = ttl_seconds
        self._local = MemoryQueryStore(min(local, size), min(LOCAL_BYTES, max_bytes))
        self._register = redis.register_script(REGISTER)

    async def get(self, digest: str) -> str | None:
        query = await self._local.get(digest)
        if query is not None:
            return query
        try:
            raw = await self._call(lambda: self._redis.get(self._prefix + digest))
        except RedisUnavailable:  # the breaker logs, once per back-off
            return None
        except Exception as error:
            logger.warning("Persisted query lookup failed: %s", error)
            return None
        if raw is None:
            return None
        query = raw.decode() if isinstance(raw, bytes) else str(raw)
        await self._local.put(digest, query)
        return query

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        return await (command() if self._breaker is None else self._breaker.call(command))

    async def put(self, digest: str, query: str) -> None:
        size = weight(digest, query)
        if size > self._max_bytes:
            return
        await self._local.put(digest, query)
        args: list[str | int | float] = [
            self._prefix,
            digest,
            query,
            self._ttl,
            time.time(),
            self._size,
            self._max_bytes,
            size,
        ]
        try:
            await self._call(lambda: self._register(keys=self._keys, args=args))
        except RedisUnavailable:
            pass
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
