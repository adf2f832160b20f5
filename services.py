"""The process-wide resources (database pool, Redis, broadcast, revocations, rate limiter),
opened by the app's lifespan from the settings and reached through the app, never through
module globals: importing a module connects to nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from databases import Database
from redis import asyncio as aioredis

from db.access import AccessReads
from db.connection import open_database
from limits.rate import RateLimiter
from realtime.broadcast import ChannelBroadcast, open_broadcast
from realtime.expiring import ExpiringSets, MemoryExpiringSets, RedisExpiringSets
from realtime.presence import PresenceTracker
from realtime.publisher import Publisher
from realtime.quota import LiveQuota
from realtime.revocations import Revocations
from redis_client import RedisBreaker, create_redis
from settings import Settings
from topics import presence_topic
from viewer_cache import ViewerCache


@dataclass
class Services:
    settings: Settings
    db: Database
    redis: aioredis.Redis | None
    breaker: RedisBreaker | None  # bounds the Redis calls a request waits on (None without Redis)
    broadcast: ChannelBroadcast
    viewers: ViewerCache
    revocations: Revocations
    limiter: RateLimiter
    access: AccessReads
    publisher: Publisher
    expiring: ExpiringSets  # typing and presence: Redis, or this process's memory
    presence: PresenceTracker
    quota: LiveQuota  # live subscriptions and connections per user


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Services]:
    redis = (
        create_redis(
            settings.redis_url, settings.redis_ssl_cert_reqs, settings.redis_pool_max, settings.redis_acquire_timeout
        )
        if settings.redis_url
        else None
    )
    breaker = RedisBreaker(settings.redis_command_timeout) if redis is not None else None
    db = open_database(settings)
    broadcast = open_broadcast(redis)
    viewers = ViewerCache()
    expiring = RedisExpiringSets(redis, settings.channel_prefix, breaker) if redis else MemoryExpiringSets()
    publisher = Publisher(broadcast, settings.channel_prefix, breaker)
    access = AccessReads(db)
    services = Services(
        settings=settings,
        db=db,
        redis=redis,
        breaker=breaker,
        broadcast=broadcast,
        viewers=viewers,
        revocations=Revocations(broadcast, viewers, f"{settings.channel_prefix}revocations", shared=redis is not None),
        limiter=RateLimiter(redis, settings.channel_prefix, breaker),
        access=access,
        publisher=publisher,
        expiring=expiring,
        presence=PresenceTracker(
            expiring,
            publisher,
            access.room_ids_of,
            presence_topic,
            hold=settings.presence_seconds,
            offline_after=settings.presence_offline_after,
        ),
        quota=LiveQuota(
            redis,
            settings.channel_prefix,
            max_subscriptions=settings.max_subscriptions_per_user,
            max_connections=settings.max_connections_per_user,
            lease_seconds=settings.live_lease_seconds,
            breaker=breaker,
        ),
    )
    await db.connect()
    try:
        await broadcast.connect()
        try:
            await services.revocations.start()
            await services.presence.start()
            await services.quota.start()
            try:
                yield services
            finally:
                await services.publisher.close()
                await services.quota.stop()
                await services.presence.stop()
                await services.revocations.stop()
        finally:
            await broadcast.disconnect()
    finally:
        await db.disconnect()
        if redis is not None:
            await redis.aclose()
