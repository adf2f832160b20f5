"""What the resolvers reach of the process: its resources, built by the composition root
(composition.services, opened by composition.assemble) and handed to every operation in its
context. Built whole, once; nothing is assigned onto it afterwards."""

from __future__ import annotations

from dataclasses import dataclass

from databases import Database
from redis import asyncio as aioredis

from core.broadcast import ChannelBroadcast
from core.redis_clients import RedisBreaker
from core.settings import Settings
from db.access import AccessReads
from identity.revocations import Revocations
from identity.viewers import Viewers
from limits.rate import RateLimiter
from live.expiring import ExpiringSets
from live.presence import PresenceTracker
from live.publisher import Publisher
from live.quota import LiveQuota


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    redis: aioredis.Redis | None
    breaker: RedisBreaker | None  # bounds the Redis calls a request waits on (None without Redis)
    broadcast: ChannelBroadcast
    viewers: Viewers  # who the viewer is (its cache: `viewers.cache`)
    revocations: Revocations
    limiter: RateLimiter
    access: AccessReads
    publisher: Publisher
    expiring: ExpiringSets  # typing and presence: Redis, or this process's memory
    presence: PresenceTracker
    quota: LiveQuota  # live subscriptions and connections per user
