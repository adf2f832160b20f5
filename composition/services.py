"""The process's resources that the resolvers reach (resolvers.services.Services), built from the
settings, connected to nothing yet: `composition.assemble` opens and starts them in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from core.broadcast import open_broadcast
from core.redis_clients import RedisBreaker, create_redis
from core.settings import Settings
from db.access import AccessReads
from db.connection import open_database
from identity.auth import HostTokens, JwksKeys, TokenPolicy
from identity.revocations import Revocations
from identity.viewer_cache import ViewerCache
from identity.viewers import Viewers
from limits.rate import RateLimiter
from live.expiring import MemoryExpiringSets, RedisExpiringSets
from live.presence import PresenceTracker
from live.publisher import Publisher
from live.quota import LiveQuota
from resolvers.services import Services
from resolvers.topics import presence_topic
from telemetry import record


def _redis_states(redis: Redis) -> Callable[[], dict[str, int]]:
    """The Redis pool's connections by state (redis-py's public count), for telemetry."""

    def states() -> dict[str, int]:
        return {
            attributes["db.client.connection.state"]: count
            for count, attributes in redis.connection_pool.get_connection_count()
        }

    return states


def build_services(
    settings: Settings, policy: TokenPolicy, observer: Callable[[str, dict[str, Any]], None] | None = None
) -> Services:
    """`observer` is told of every event published (the webhooks' doorbell)."""
    redis = (
        create_redis(
            settings.redis_url,
            settings.redis_ssl_cert_reqs,
            settings.redis_pool_max,
            settings.redis_acquire_timeout,
            observer=record.PoolWaits(record.REDIS),
        )
        if settings.redis_url
        else None
    )
    if redis is not None:
        record.observe_pool(record.REDIS, _redis_states(redis))
    db = open_database(settings)
    broadcast = open_broadcast(redis, on_reconnect=record.pubsub_reconnected)
    cache = ViewerCache(policy=policy)
    # Bounds the Redis calls a request waits on (core.redis_clients); none without Redis.
    breaker = RedisBreaker(settings.redis_command_timeout) if redis is not None else None
    expiring = RedisExpiringSets(redis, settings.channel_prefix, breaker) if redis else MemoryExpiringSets()
    publisher = Publisher(broadcast, settings.channel_prefix, breaker, observer)
    access = AccessReads(db)
    return Services(
        settings=settings,
        db=db,
        redis=redis,
        breaker=breaker,
        broadcast=broadcast,
        viewers=Viewers(db, access, cache, policy, host_tokens(settings), settings.service_keys),
        revocations=Revocations(broadcast, cache, f"{settings.channel_prefix}revocations", shared=redis is not None),
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


def host_tokens(settings: Settings) -> HostTokens:
    """The host's JWTs as the settings accept them (none without AUTH_JWT_SECRET or AUTH_JWKS_URL)."""
    jwks = (
        JwksKeys(settings.auth_jwks_url, settings.auth_jwks_refetch_seconds, settings.auth_jwks_cache_seconds)
        if settings.auth_jwks_url
        else None
    )
    return HostTokens(
        settings.auth_jwt_secret,
        jwks,
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
        leeway=settings.auth_jwt_leeway_seconds,
    )
